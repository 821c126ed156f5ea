"""Measurement of one kept checkpoint: the Hessian spectrum (SLQ), the exact spectrum of small nets and the
probes, on the run's measurement set; returns plain JSON-able dicts and arrays (written by the runner).

    measure/epochNNN.json  {"epoch", "step", "seconds", "measurement_set", "spectrum": {...}, "exact": {...},
                            "probes": [records], "transitions": [the input and dimension-changing blocks,
                            reported apart]}
    measure/epochNNN.npz   exact_eigenvalues (ascending)
    measure/epochNNN/      spectrum.json + spectrum.npz: the SLQ spectrum in the one spectrum format
                           (`landscape.hessian.cli.spectrum_file`; read it back with `read_spectrum`)

The measurement set is the same `probe_samples` training samples for every run (`landscape.data.measurement_set`:
a fixed random subset, seed 0).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoint import load_checkpoint
from landscape.data import measurement_set_record
from landscape.experiment.config import Run
from landscape.experiment.keys import NULL_EPS
from landscape.objective import select_params
from landscape.train.losses import Loss, evaluation_loss


def _batches(X: torch.Tensor, y: torch.Tensor, n: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    X, y = X[:n], y[:n]
    return [(X[s:s + batch_size], y[s:s + batch_size]) for s in range(0, len(X), batch_size)]


def measure_spectrum(model: nn.Module, batches: list, cfg: dict, loss_fn: Loss = F.cross_entropy) -> tuple[dict, dict]:
    """SLQ estimate of the Hessian spectrum of `loss_fn` over `batches` (`landscape.hessian`): (summary,
    {"spectrum": the `SpectralDensity`}), written by the runner in the one spectrum format
    (`landscape.hessian.cli.spectrum_file`).

    Args:
        model: the model at the measured epoch (eval mode).
        batches: the measurement set as (X, y) batches.
        cfg: the run's [spectrum] settings (iters, vectors, eps, seed, params).
        loss_fn: the run's loss.

    Returns:
        (summary with "seconds_slq", {"spectrum": SpectralDensity}).
    """
    from landscape.hessian import HessianOperator, slq_density

    op = HessianOperator(model, loss_fn, batches, params=select_params(model, cfg.get("params")))
    sd = slq_density(op, min(cfg["iters"], op.dim), cfg["vectors"], seed=cfg["seed"])  # (op, iters, vectors)
    return {**sd.summary(cfg["eps"]), "seconds_slq": sd.meta["seconds"]}, {"spectrum": sd}


def measure_exact(model: nn.Module, batches: list, cfg: dict, loss_fn: Loss = F.cross_entropy) -> tuple[dict, dict]:
    """Exact Hessian eigenvalues (float64) of `loss_fn` for a small model, summarized like SLQ plus `null_ratio`,
    the mass below keys.NULL_EPS·λmax: (summary, arrays).

    Args:
        model: the model at the measured epoch (eval mode).
        batches: the measurement set as (X, y) batches.
        cfg: the run's [exact] settings (max_params, eps, params).
        loss_fn: the run's loss.

    Returns:
        (summary, {"exact_eigenvalues": ascending float64 eigenvalues}); a model over max_params is skipped with
        the reason in the summary.
    """
    from landscape.hessian import SpectralDensity, exact_hessian

    names = select_params(model, cfg.get("params"))
    n_params = sum(p.numel() for n, p in model.named_parameters() if n in names)
    if n_params > cfg["max_params"]:
        return {"skipped": f"{n_params} parameters > max_params {cfg['max_params']}", "n_params": n_params}, {}
    # 64 columns per vmap chunk: measured ~1.5x faster than 256 or 512 for the quick-profile FC nets on a CPU
    H = exact_hessian(model, loss_fn, batches, names, max_params=cfg["max_params"], chunk_size=64)
    eigs = torch.linalg.eigvalsh(H).cpu().numpy()
    sd = SpectralDensity(eigs[None, :], np.full((1, eigs.size), 1.0 / eigs.size), eigs.size)
    summary = {k: v for k, v in sd.summary(cfg["eps"]).items()
               if k not in ("probes", "vectors", "iters") and not k.endswith("_stderr")}
    summary["null_ratio"] = float(np.mean(np.abs(eigs) < NULL_EPS * eigs.max()))  # numerically zero (keys.NULL_EPS)
    return summary, {"exact_eigenvalues": eigs}


def _probe_records(model: nn.Module, X, y, metrics: list[str], batch_size: int, loss_fn: Loss,
                   **extra) -> list[dict]:
    from landscape.probes import run_probes

    records = run_probes(model, loss_fn, (X, y), metrics=metrics, batch_size=batch_size)
    return [{**extra, **{k: v for k, v in r.items() if k != "step"}} for r in records]


def transition_blocks(model: nn.Module, X: torch.Tensor, blocks: list[str]) -> list[str]:
    """The blocks (qualified module names) without an identity skip that change the stream's dimension: the
    "input" and "transition" entries of `landscape.models.roles.block_roles` (structural: an FC net's input
    block, ProcResNet transitions, projection shortcuts, strided convs), plus any other block whose output
    shape differs from its input's on a forward of X. Norm preservation is reported over the rest
    (`keys.norm_preservation`).

    Args:
        model: the model.
        X: inputs for one forward.
        blocks: the probed blocks.

    Returns:
        The transition blocks, in the order of `blocks`.
    """
    from landscape.models.roles import block_roles

    roles = block_roles(model)
    changed: list[str] = [b for b in blocks if roles.get(b) in ("input", "transition")]
    handles = []
    for name in blocks:
        if name in roles:
            continue
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue

        def hook(mod, args, output, name=name):
            x = args[0] if args else None
            if torch.is_tensor(x) and torch.is_tensor(output) and x.shape != output.shape:
                changed.append(name)
        handles.append(module.register_forward_hook(hook))
    if handles:
        try:
            with torch.no_grad():
                model(X)
        finally:
            for h in handles:
                h.remove()
    return [b for b in blocks if b in set(changed)]


def measure_epoch(ckpt: Path, run: Run, probe: tuple, device: torch.device) -> tuple[dict, dict]:
    """Everything `run.measure` asks for at the checkpoint's epoch: (summary JSON, NPZ arrays; "spectrum" holds
    the SLQ `SpectralDensity`, written apart by the runner). Every quantity is of the run's own loss
    (`landscape.train.losses.evaluation_loss`).

    Args:
        ckpt: the epoch's checkpoint.
        run: the run (its measurement plan and training config).
        probe: the measurement set (X, y).
        device: where to measure.

    Returns:
        (summary, arrays).
    """
    model, meta = load_checkpoint(ckpt, map_location=device)
    loss_fn = evaluation_loss(run.train)
    epoch, m = meta["epoch"], run.measure
    X, y = probe
    out: dict = {"epoch": epoch, "step": meta.get("step", 0), "seconds": {},
                 "measurement_set": measurement_set_record(len(X))}
    arrays: dict = {}
    for section, fn in (("spectrum", measure_spectrum), ("exact", measure_exact)):
        if section in m and epoch in m[section]["epochs"]:
            t0 = time.perf_counter()
            n = m[section].get("n_samples", m["probe_samples"])
            summary, arr = fn(model, _batches(X, y, n, m["batch_size"]), m[section], loss_fn)
            out[section] = {**summary, "n_samples": min(n, len(X))}
            arrays.update(arr)
            out["seconds"][section] = time.perf_counter() - t0
    if "probes" in m and epoch in m["probes"]["epochs"]:
        t0 = time.perf_counter()
        out["probes"] = _probe_records(model, X, y, m["probes"]["metrics"], m["batch_size"], loss_fn,
                                       epoch=epoch, step=out["step"])
        blocks = list(dict.fromkeys(r["block"] for r in out["probes"] if r["metric"] == "grad_ratio"))
        if blocks:
            out["transitions"] = transition_blocks(model, X[:2], blocks)
        out["seconds"]["probes"] = time.perf_counter() - t0
    return out, arrays


