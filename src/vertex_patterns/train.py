"""`python -m vertex_patterns.train`: the trainer entry point inside the training container."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

# The first thing the process does: a preemption notice can come during start-up (the imports
# below take seconds on a busy VM), when no training state exists yet. Nothing is saved or
# half-written then, so the answer is 76 ("preempted without a new checkpoint: restart") at
# once. The trainer installs its own handler before it builds anything, and keeps one to the
# last instant of the process (see `vertex_patterns.training.preemption`).
_EXIT_PREEMPTED_UNSAVED = 76  # training.config.EXIT_PREEMPTED_UNSAVED, without its imports


def exit_during_startup(signum: int, frame: FrameType | None) -> None:
    """Signal handler until the trainer's own: exit 76 at once (also `vertex-patterns train`)."""
    try:
        os.write(2, f"{signal.Signals(signum).name} during start-up: nothing to save; "
                    "exiting now\n".encode())
    finally:
        os._exit(_EXIT_PREEMPTED_UNSAVED)


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_sig, exit_during_startup)

    from vertex_patterns.cli.train import main

    sys.exit(main())
