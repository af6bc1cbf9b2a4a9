"""Entry point of a ``KillingProcessPool`` worker: ``python -m k2rl.judge.procworker [module ...]``.

Reads ``(function "module:qualname", args)`` frames from stdin and writes ``(ok, value)``
frames to stdout (multiprocessing ``Connection`` framing, pickled). The listed modules are
imported first and ``"ready"`` is sent, so calls do not pay for the imports. Stray prints of the libraries it
runs go to stderr: fd 1 is the protocol channel and is moved out of their way.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


def _resolve(name: str) -> Callable[..., Any]:
    module, _, attr = name.partition(":")
    target: Any = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


def main(preload: list[str]) -> None:
    requests = Connection(os.dup(0), writable=False)
    replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # print() now lands on stderr
    sys.stdout = sys.stderr
    for module in preload:
        importlib.import_module(module)
    replies.send("ready")  # start-up is over; the pool's call timeouts start from here
    while True:
        try:
            name, args = requests.recv()
        except (EOFError, OSError):
            return
        try:
            reply = (True, _resolve(name)(*args))
        except Exception as error:  # reported to the caller; the worker lives on
            reply = (False, f"{type(error).__name__}: {error}")
        try:
            replies.send(reply)
        except OSError:
            return


if __name__ == "__main__":
    main(sys.argv[1:])
