"""The hessian CLI's resumable SLQ: OUT/lanczos_state.pt, written by rank 0, readable by every rank (or, for a
sharded model whose ranks hold different parts of the vectors, one file per rank, each written by its rank).

The hessian CLI's room (orchestration). `lanczos` hands a state dict (CPU
tensors, ints and strings) to `on_state` every --state-every iterations; it is written atomically with the
run's identity (operator, checkpoint, sample count), which `--resume` checks before continuing, so a
resumed run reproduces the uninterrupted one. The file is removed once the outputs are written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from landscape import distributed
from landscape.errors import LandscapeError, first_line
from landscape.io import atomic_write

NAME = "lanczos_state.pt"


class StateFile:
    """OUT/lanczos_state.pt: rank 0 writes each state `lanczos` hands over; every rank can read it back.
    own=True: this rank's own file, written by this rank (sharded vectors)."""

    def __init__(self, path: Path, run: dict, own: bool = False):
        self.path, self.run, self.own = path, run, own
        self.latest: dict | None = None
        self.written = True

    def on_state(self, state: dict) -> None:
        """Keep the solver's latest resumable state (with the run's settings) and write it (rank 0, or every rank
        with its own file).

        Args:
            state: the solver's checkpoint state.
        """
        self.latest, self.written = {**state, **self.run}, False
        if self.own or distributed.is_main():
            self.write()

    def write(self) -> None:
        """Write the latest state atomically (`torch.save` into a temp file, then os.replace)."""
        with atomic_write(self.path) as f:
            torch.save(self.latest, f)
        self.written = True

    def load(self) -> dict | None:
        """The saved state without the run identity, or None (with a note) when there is none."""
        if not self.path.is_file():
            if distributed.is_main():
                print(f"note: {self.path} not found; starting the SLQ run afresh", file=sys.stderr)
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
            raise LandscapeError(f"{self.path}: cannot read the Lanczos state ({first_line(e, limit=200)})") from None
        if not isinstance(state, dict):
            raise LandscapeError(f"{self.path}: not a Lanczos state (a {type(state).__name__})")
        for key, value in self.run.items():
            if state.get(key) != value:
                raise LandscapeError(f"{self.path}: the state is for {key}={state.get(key)!r}, this run has {value!r}")
        return {k: v for k, v in state.items() if k not in self.run}

    def report_interrupt(self, signal_name: str) -> None:
        """On SIGINT/SIGTERM: make sure the latest state is on disk and say how to resume (rank 0).

        Args:
            signal_name: the signal's name, for the message.
        """
        if self.own and self.latest is not None and not self.written:
            self.write()
        if not distributed.is_main():
            return
        if self.latest is not None:
            if not self.written:
                self.write()
            print(f"{signal_name}: Lanczos state saved to {self.path}; resume with --resume", file=sys.stderr)
        else:
            print(f"{signal_name}: stopped before any Lanczos state was saved; run again", file=sys.stderr)
