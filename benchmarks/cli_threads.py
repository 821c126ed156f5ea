"""CPU threads of the CLIs: wall time of `landscape.hessian`, `landscape.surface` and `landscape.train` with
`--threads 1`, `--threads 2` (all cores of the 2-core test machine) and the default, on a shared machine.

    nice -n 10 python benchmarks/cli_threads.py --rounds 3                 # FC residual 20 × 128, MNIST-1D
    python benchmarks/cli_threads.py --rounds 2 --busy 1                    # plus one busy process per round

Each CLI runs as its own process, as a user runs it; the settings are interleaved round by round (the load
of a shared machine drifts), and every run prints one JSON line: the CLI, the threads asked for ("default":
the flag left out) and used (read back from the CLI's output files), wall seconds of the process, and the
1-minute load average before the run. `--busy K` starts K pure-Python busy loops for the duration of each
round (another job on the machine, at this script's priority) and stops them after it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIS = ("hessian", "surface", "train")
SETTINGS = ("1", "2", "default")
MODEL = {"kind": "residual", "depth": 20, "width": 128}


def _checkpoint(tmp: Path, n_samples: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from landscape.checkpoint import save_checkpoint
    from landscape.data import load_data
    from landscape.models import build

    data = load_data("mnist1d", n_samples=n_samples)
    model = build("fc", **MODEL)
    path = tmp / "ckpt.pt"
    save_checkpoint(path, model, meta={"model": model.build_spec, "data": data.spec, "epoch": 0})
    return path


def _argv(cli: str, ckpt: Path, out: Path, n_samples: int) -> list[str]:
    if cli == "hessian":
        return ["-m", "landscape.hessian", str(ckpt), "--n-samples", str(n_samples), "--iters", "20", "--vectors", "4",
                "--top-k", "0", "--no-progress", "--out", str(out)]
    if cli == "surface":
        return ["-m", "landscape.surface", str(ckpt), "--grid", "-1:1:21", "--n-samples", str(n_samples),
                "--no-progress", "--out", str(out)]
    return ["-m", "landscape.train", "--model-config", json.dumps(MODEL), "--n-samples", str(n_samples), "--epochs",
            "1", "--no-progress", "--out", str(out)]


def _threads_used(cli: str, out: Path) -> int | None:
    name = {"hessian": "spectrum.json", "surface": "surface.json", "train": "config.json"}[cli]
    try:
        record = json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None
    return record.get("threads", record.get("config", {}).get("threads"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-samples", type=int, default=2000)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes running during each round")
    ap.add_argument("--clis", nargs="+", default=list(CLIS), choices=CLIS)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["LANDSCAPE_CACHE"] = env["LANDSCAPE_CACHE"] = str(tmp / "cache")
        ckpt = _checkpoint(tmp, args.n_samples)
        for r in range(args.rounds):
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
            try:
                time.sleep(2 if busy else 0)
                for cli in args.clis:
                    for setting in SETTINGS:
                        out = tmp / f"{cli}-{setting}-{r}"
                        argv = [sys.executable, *_argv(cli, ckpt, out, args.n_samples)]
                        if setting != "default":
                            argv += ["--threads", setting]
                        load = os.getloadavg()[0]
                        t0 = time.perf_counter()
                        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
                        wall = time.perf_counter() - t0
                        print(json.dumps({"cli": cli, "threads": setting, "used": _threads_used(cli, out),
                                          "wall_s": round(wall, 2), "load1_before": load, "busy": args.busy,
                                          "round": r, "rc": proc.returncode,
                                          **({"stderr": proc.stderr[-300:]} if proc.returncode else {})}),
                              flush=True)
            finally:
                for p in busy:
                    p.kill()
                    p.wait()


if __name__ == "__main__":
    main()
