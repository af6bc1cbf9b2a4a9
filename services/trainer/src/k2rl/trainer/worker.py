"""Entry point of trainer ranks > 0 spawned by ``launch.start_job`` (``python -m k2rl.trainer.worker``)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

from k2rl.trainer.launch import JOB_SPEC_ENV, JobSpec, run_follower

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format=f"rank {os.environ.get('RANK')}: %(message)s")
    die_with_parent()
    # Ctrl-C reaches the whole process group; rank 0 decides when the job stops and tells
    # the followers, and if rank 0 dies the kernel kills them (die_with_parent).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_follower(JobSpec.model_validate_json(os.environ[JOB_SPEC_ENV]))


if __name__ == "__main__":
    main()
