"""``python -m k2rl.sandbox [--port P] [--metrics-port M] [--config FILE]``: serve only this service.

Same settings and behaviour as ``k2rl serve sandbox``, without loading the other services.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from k2rl.core.config import load_settings
from k2rl.core.server import serve
from k2rl.sandbox.service import SERVICE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k2rl.sandbox", description=SERVICE.description)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--metrics-port", type=int)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(SERVICE.settings_type, SERVICE.name, args.config,
                                 {"host": args.host, "port": args.port, "metrics_port": args.metrics_port})
    except (ValueError, FileNotFoundError) as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    serve(SERVICE, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
