"""Probe cost: (a) grad_norm + stream probes on a training step, (b) singularity metrics on a probe set.

Targets (issue 4): (a) ≤ 10% on a step of the 20 × 128 FC nets on CPU (and of ResNetV2-18 on a GPU);
(b) seconds for 10,000 samples × 20 layers × 128 units on CPU.

    python benchmarks/probes_overhead.py                      # both, FC nets, CPU
    python benchmarks/probes_overhead.py --model resnetv2_18 --device cuda --only step

(a) times an Adam step (zero_grad, forward, cross-entropy, backward, step) three ways: plain; inside
`with probe(...)` (a user probing their own step: building the probe from cached blocks, hooking,
the reductions and reading `records` included); and the training callback that `--probes
grad_norm,stream` runs after every K-th step (its own forward and backward on the step's batch,
with state saved and restored). A `--probe-every K` run pays callback / (K · step), reported for
`--every` (default 50, B.3's log interval). Variants alternate in rounds and each reports its
median, so drift on a shared machine hits all alike. probe_own_ms is the time spent inside the probe's own
methods per probed step (hooks, reductions, records; `_OwnClock`), the overhead measured directly, and
overhead_probe_own its ratio to the plain step. (b) times `run_probes(..., "singularity")` and,
separately, the forward passes alone. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from landscape.cli import run_cli
from landscape.errors import resolve_device
from landscape.models import build
from landscape.probes import Probe, find_blocks, make_probe_callback, probe, run_probes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(name: str, device: torch.device, kind: str = "residual"):
    if name == "fc":
        model = build("fc", kind=kind, depth=20, width=128, in_dim=40, n_classes=10)
        shape = (40,)
    else:
        model = build("resnetv2", depth=18, n_classes=10)
        shape = (3, 32, 32)
    return model.to(device), shape


class _OwnClock:
    """Seconds spent inside the probe's own code (hooks, reductions, records), outermost calls only.

    A shared machine inflates whole-step times by tens of percent between rounds, more than a probe costs
    on a large model; timing the probe's own methods directly measures its overhead with the same noise
    on numerator and denominator. Not counted: PyTorch's hook dispatch and the C-level gradient stores."""

    NAMES = ("attach", "detach", "flush", "_on_model_start", "_on_model_end", "_on_connect", "_capture",
             "_capture_input", "_on_block", "_on_units")

    def __init__(self):
        self.seconds, self._depth, self._saved = 0.0, 0, {}

    def _wrap(self, fn):
        def timed(*a, **kw):
            self._depth += 1
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - t
        return timed

    def __enter__(self):
        for name in self.NAMES:
            self._saved[name] = getattr(Probe, name)
            setattr(Probe, name, self._wrap(self._saved[name]))
        self._saved["records"] = Probe.records
        Probe.records = property(self._wrap(Probe.records.fget))
        return self

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(Probe, name, fn)


def own_time(model, X, y, args, blocks) -> float:
    """Median seconds of the probe's own code per probed step (see `_OwnClock`)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = []
    for i in range(args.warmup + args.rounds * args.steps):
        with _OwnClock() as clock:
            with probe(model, blocks, ("grad_norm", "stream")) as p:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(X), y).backward()
                opt.step()
            _ = p.records
        if i >= args.warmup:
            out.append(clock.seconds)
    return statistics.median(out)


def time_steps(model, X, y, args, device: torch.device) -> dict[str, float]:
    """Median seconds of a plain step, a probed step and the training callback, alternating in rounds."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    blocks = find_blocks(model)
    callback = make_probe_callback(["grad_norm", "stream"], blocks=blocks)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y).backward()
        opt.step()

    def probed():
        with probe(model, blocks, ("grad_norm", "stream")) as p:
            step()
        return p.records

    variants = {"plain": step, "probed": probed, "callback": lambda: callback(1, model, (X, y), None)}
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            for _ in range(args.steps):
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_step(args, device: torch.device) -> None:
    for kind in (["residual", "plain"] if args.model == "fc" else ["resnet"]):
        for batch in args.batch:
            torch.manual_seed(args.seed)
            model, shape = _model(args.model, device, kind)
            X = torch.randn(batch, *shape, device=device)
            y = torch.randint(0, 10, (batch,), device=device)
            t = time_steps(model, X, y, args, device)
            own = own_time(model, X, y, args, find_blocks(model))
            print(json.dumps({"bench": "probe_step", "model": args.model, "kind": kind, "device": str(device),
                              "batch": batch, "threads": torch.get_num_threads(),
                              "plain_ms": round(1e3 * t["plain"], 3), "probed_ms": round(1e3 * t["probed"], 3),
                              "callback_ms": round(1e3 * t["callback"], 3),
                              "overhead_probed_step": round(t["probed"] / t["plain"] - 1, 4),
                              "probe_own_ms": round(1e3 * own, 3),
                              "overhead_probe_own": round(own / t["plain"], 4),
                              f"overhead_train_every_{args.every}": round(t["callback"] / (args.every * t["plain"]),
                                                                          5)}), flush=True)


def bench_singularity(args, device: torch.device) -> None:
    torch.manual_seed(args.seed)
    model = build("fc", kind="residual", depth=20, width=128, in_dim=40, n_classes=10).to(device).eval()
    X = torch.randn(args.samples, 40, device=device)
    for batch_size in (args.probe_batch, None):
        _sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            for s in range(0, len(X), batch_size or len(X)):
                model(X[s:s + (batch_size or len(X))])
        _sync(device)
        forward = time.perf_counter() - t
        t = time.perf_counter()
        records = run_probes(model, None, X, metrics="singularity", batch_size=batch_size)
        _sync(device)
        total = time.perf_counter() - t
        print(json.dumps({"bench": "singularity", "device": str(device), "samples": args.samples,
                          "layers": 20, "units": 128, "batch_size": batch_size or args.samples,
                          "seconds": round(total, 3), "forward_only_s": round(forward, 3),
                          "records": len(records)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["step", "singularity"], help="run one benchmark (default: both)")
    ap.add_argument("--model", choices=["fc", "resnetv2_18"], default="fc", help="model of the step benchmark")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 500], help="training batch sizes")
    ap.add_argument("--every", type=int, default=50, help="probe interval K for the amortized overhead")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round and variant")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of plain / probed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps of each variant first")
    ap.add_argument("--samples", type=int, default=10_000, help="probe-set size (singularity benchmark)")
    ap.add_argument("--probe-batch", type=int, default=1000, help="probe-set batch size")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.only in (None, "step"):
        bench_step(args, device)
    if args.only in (None, "singularity"):
        bench_singularity(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
