"""What every command-line entry point shares: one-line errors with exit 2, signals, threads, progress,
output checks.

Foundation layer. A CLI is `sys.exit(run_cli(main))`: a `LandscapeError` prints `error: <one line>` to
stderr and exits 2 (usage errors too: `Parser` turns them into one line), an `Interrupted` exits
128 + signum (130 for SIGINT, 143 for SIGTERM); anything else is a bug and keeps its traceback. Output
directories are checked with `prepare_out_dir` before any compute, so bad input never costs a finished
computation. Everything a CLI changes in the process (signal handlers, torch's thread count) is put back
when it returns, so a CLI called in-process leaves its caller as it found it.

Threads (`default_threads`, BENCHMARKS.md "CPU threads of the CLIs"): torch's default intra-op pool has one
thread per physical core. On a machine that other jobs keep busy, a parallel region waits for its slowest
thread, and a thread whose core is taken waits a whole scheduler slice: measured on 2 shared cores, the
default ran up to ten times slower than one thread. The default therefore counts only the cores that
the 1-minute load average leaves idle.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from landscape.errors import LandscapeError, first_line

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so `except Exception` blocks do not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal number: the shell's status for a process ended by that signal."""
        return 128 + self.signum

    @property
    def name(self) -> str:
        """The signal's name, e.g. "SIGINT"."""
        return signal.Signals(self.signum).name


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as one `LandscapeError` line (`error: ... (see --help)`, exit 2 through
    `run_cli`) instead of the whole usage text, like every other bad input."""

    def error(self, message: str):
        """Raise the usage error as a `LandscapeError`.

        Args:
            message: argparse's message, e.g. "argument --grid: grid must be START:STOP:NUM".

        Raises:
            LandscapeError: always.
        """
        raise LandscapeError(f"{message} (see --help)")


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI entry point and return its exit status (see the module docstring).

    Args:
        main: the entry point, main(argv) → exit status or None (0).
        argv: the arguments (None: sys.argv[1:], as argparse reads them).

    Returns:
        main's status; 2 after a `LandscapeError` (its first line printed as `error: ...` on stderr);
        128 + signum after an `Interrupted`.
    """
    try:
        return int(main(argv) or 0)
    except LandscapeError as e:
        print(f"error: {first_line(e, limit=None)}", file=sys.stderr)
        return 2
    except Interrupted as e:
        return e.exit_code


class _Signals:
    def __init__(self, mode: str):
        self.mode = mode
        self.received: int | None = None

    def handle(self, signum: int, frame) -> None:
        if self.mode == "raise" or self.received is not None:
            raise Interrupted(signum)
        self.received = signum


@contextmanager
def interrupts(mode: str = "raise") -> Iterator[_Signals]:
    """Turn SIGINT/SIGTERM into `Interrupted` for the body; the handlers found (whatever they were, SIG_IGN
    under nohup or cron included) come back after.

    Off the main thread (where Python cannot install handlers) this does nothing and `.received` stays None.

    Args:
        mode: "raise": a signal raises `Interrupted` at once. "flag": the first signal only sets
            `.received` (poll it at a safe point, e.g. a step boundary); a second raises.

    Returns:
        A context manager yielding the state, whose `.received` is the first signal's number or None.
    """
    if mode not in ("raise", "flag"):
        raise ValueError(f"mode must be 'raise' or 'flag', got {mode!r}")
    state = _Signals(mode)
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    old = {sig: signal.signal(sig, state.handle) for sig in SIGNALS}
    try:
        yield state
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


THREADS_HELP = ("CPU threads torch may use (default: the idle cores, from the load average; "
                "OMP_NUM_THREADS when set)")


def default_threads() -> int:
    """The CPU threads a CLI uses when none are named: the cores the load average leaves idle.

    `OMP_NUM_THREADS`, when set (torchrun sets it to 1 per rank), is taken as it is. Otherwise, with C the
    CPUs this process may run on (`os.sched_getaffinity`), P ≤ C torch's own default (one thread per
    physical core) and L the 1-minute load average over the machine's N CPUs:
        threads = max(1, min(P, round(N − L)))
    so a quiet machine gets all its cores and a busy one a single thread (BENCHMARKS.md, "CPU threads of
    the CLIs": on 2 shared cores the default pool ran 1.8 to 10 times slower than one thread).

    Returns:
        The thread count, ≥ 1.
    """
    import torch

    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    machine = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine
    cores = max(1, min(usable, torch.get_num_threads()))
    try:
        load = os.getloadavg()[0]
    except OSError:                                        # no load average on this platform
        return cores
    return max(1, min(cores, round(machine - load)))


@contextmanager
def cpu_threads(threads: int | None = None) -> Iterator[int]:
    """torch's intra-op thread count for the body; the count found before comes back after.

    Args:
        threads: the count (None: `default_threads()`).

    Returns:
        A context manager yielding the count in use.
    """
    import torch

    before = torch.get_num_threads()
    n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise LandscapeError(f"--threads must be at least 1, got {n}")
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
             enabled: bool | None = True, initial: int = 0, unit: str = "it"):
    """A tqdm progress bar on stderr, off on ranks other than 0.

    Args:
        iterable: what to iterate over (None: update the bar by hand).
        total: the number of steps.
        desc: the label in front of the bar.
        enabled: True, False, or None (only when stderr is a terminal).
        initial: steps already done (a resumed run).
        unit: the name of one step.

    Returns:
        A `tqdm` bar (a context manager and an iterable).
    """
    from tqdm.auto import tqdm

    from landscape import distributed

    disable = True if (enabled is False or not distributed.is_main()) else (None if enabled is None else False)
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=disable, file=sys.stderr,
                dynamic_ncols=True, unit=unit)


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) and prove it is a writable directory, before any compute is spent.

    Args:
        path: the output directory.

    Returns:
        `path` as a `Path`.

    Raises:
        LandscapeError: it is a file, or cannot be created or written.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise LandscapeError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        test_file = out / f".write-test.{os.getpid()}.{secrets.token_hex(4)}"
        test_file.touch()
        test_file.unlink()
    except OSError as e:
        raise LandscapeError(f"--out {out} is not a writable directory ({first_line(e)})") from None
    return out


def check_writable(path: str | os.PathLike, flag: str = "--out") -> None:
    """`path` must be a directory or creatable as one, and writable: `prepare_out_dir` without creating
    anything, for a CLI that must leave no empty directory behind when it later refuses bad input.

    Args:
        path: the directory.
        flag: the flag named in the error.

    Raises:
        LandscapeError: it is a file, or its nearest existing ancestor is not a writable directory.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LandscapeError(f"{flag} {path} exists and is not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise LandscapeError(f"cannot create {flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LandscapeError(f"{flag} {path}: {parent} is not writable")


def _number(text: str, kind: type, low: float, strict: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
    if not (value > low if strict else value >= low) or value != value:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0.

    Args:
        text: the flag's value.

    Returns:
        The integer (argparse.ArgumentTypeError otherwise).
    """
    return _number(text, int, 0, True, "a positive integer")


def nonneg_int(text: str) -> int:
    """argparse type: an integer ≥ 0.

    Args:
        text: the flag's value.

    Returns:
        The integer (argparse.ArgumentTypeError otherwise).
    """
    return _number(text, int, 0, False, "a non-negative integer")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0.

    Args:
        text: the flag's value.

    Returns:
        The number (argparse.ArgumentTypeError for anything else, NaN and infinity included).
    """
    value = _number(text, float, 0.0, True, "positive")
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def memory_size(text: str) -> int:
    """argparse type: a memory size.

    Args:
        text: '2G', '500M', '64K' (powers of 1024, an optional trailing B) or a byte count.

    Returns:
        The size in bytes, > 0 (argparse.ArgumentTypeError otherwise).
    """
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (use e.g. 2G, 500M)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"memory size must be positive, got {text!r}")
    return int(value)
