"""Start W processes with torchrun's environment contract (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT): the launcher of the tests that run 2 gloo ranks on CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(**extra: str) -> dict:
    """This environment without rank variables, one intra-op thread, the checkout importable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def launch(args: list[str], world: int = 2, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Run `world` ranks of `python args...` from the checkout's root; wait for all of them."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=worker_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                                                        LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                                                        MASTER_PORT=port))
             for r in range(world)]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            p.kill()
    return done
