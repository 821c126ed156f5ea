"""Run an experiment grid: train each run (cell × seed), keep its checkpoints at the measurement epochs,
measure them, and write its result; resumable at every level.

    OUT/experiment.json   resolved profile, cells, claims, notes, citations, git commit, argv
    OUT/CELL/seedS/       cell.json (resolved config and its hash: a changed config refuses to resume),
                          config.json, metrics.jsonl, checkpoint.pt (landscape.train), ckpt_epochNNN.pt,
                          probes.jsonl (step probes), measure/epochNNN.{json,npz}, measure/epochNNN/
                          (spectrum.json + spectrum.npz, `landscape.hessian.cli.spectrum_file`), spectrum.jsonl,
                          epoch_probes.jsonl, result.json, done.json (written last: the run is finished)

Resuming: a run with done.json is not trained again (its result.json is re-derived from its files, so a
changed key definition reaches every finished run); otherwise training resumes from checkpoint.pt (bit-exact on
CPU), measurement epochs with a measure/epochNNN.json are kept and the rest measured. A non-finite
training loss ends the run as "diverged": the epochs trained so far are still measured. A signal stops
training at the next step boundary and raises `landscape.cli.Interrupted` (the CLI exits 128 + signum).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from landscape.checkpoint import save_checkpoint
from landscape.cli import Interrupted, prepare_out_dir
from landscape.cli import progress as progress_bar
from landscape.data import load_data, measurement_set
from landscape.errors import LandscapeError, first_line, resolve_device
from landscape.experiment.config import Experiment, Run
from landscape.experiment.keys import final_keys, measurement_keys, step_keys, train_keys
from landscape.experiment.measure import measure_epoch
from landscape.experiment.summary import headline_table, summarize
from landscape.hessian.cli.spectrum_file import write_spectrum
from landscape.io import read_jsonl, write_json, write_jsonl, write_npz
from landscape.train import NonFiniteLoss, TrainConfig, git_version, resolved_model_config, train
from landscape.train.losses import training_loss


def _config_hash(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def _jsonl(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def run_one(run: Run, out: Path, exp: Experiment, device: torch.device,
            status: Callable[[str], None] = lambda s: None) -> dict:
    """Train and measure one run into OUT/CELL/seedS.

    Args:
        run: the run (cell × seed) with its training config and measurement plan.
        out: the experiment's output directory; the run writes OUT/CELL/seedS.
        exp: the experiment the run belongs to (name, profile and notes go into cell.json).
        device: where the run trains and measures.
        status: called with a short phase text ("train 3/20", "measure epoch 10") for a progress bar.

    Returns:
        The content of the run's result.json.

    Raises:
        LandscapeError: the run directory holds a run of a different configuration.
        Interrupted: a signal stopped training.
    """
    rdir = out / run.path
    _claim_run_dir(run, rdir, exp)
    cfg = copy.deepcopy(run.train)
    cfg.device, cfg.out = str(device), str(rdir)
    m = run.measure
    keep = sorted({e for s in ("probes", "spectrum", "exact") if s in m for e in m[s]["epochs"]})
    data = load_data(split="train", name=cfg.data, n_samples=cfg.n_samples, root=cfg.data_root, device=device,
                     seed=cfg.data_seed, download=cfg.download)
    samples = measurement_set(data, m["probe_samples"])
    history, state, message = _train_run(run, rdir, cfg, data, keep, samples, status)
    trained = history[-1]["epoch"] if history else 0
    for e in keep:  # a diverged epoch's checkpoint holds non-finite weights
        if e > trained:
            _checkpoint_path(rdir, e).unlink(missing_ok=True)
    measured = _measure_epochs(run, rdir, [e for e in keep if e <= trained], samples, device, status)
    spectra = [{k: v for k, v in s.items() if k in ("epoch", "step", "spectrum", "exact")}
               for s in measured.values() if "spectrum" in s or "exact" in s]
    records = [r for s in measured.values() for r in s.get("probes", [])]
    for name, rows in (("spectrum.jsonl", spectra), ("epoch_probes.jsonl", records)):
        if rows:
            write_jsonl(rdir / name, rows)
    result = write_result(run, rdir, history, state, message, trained, measured)
    write_json(rdir / "done.json", {"status": state, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return result


def _claim_run_dir(run: Run, rdir: Path, exp: Experiment) -> None:
    """Write rdir/cell.json (the resolved config and its hash), refusing a directory of another config."""
    record = run.record()
    digest = _config_hash(record)
    cell_json = rdir / "cell.json"
    if cell_json.exists():
        old = json.loads(cell_json.read_text()).get("hash")
        if old != digest:
            raise LandscapeError(f"{rdir} was run with a different configuration (hash {old} vs {digest}); "
                                 "delete it or choose another --out")
    rdir.mkdir(parents=True, exist_ok=True)
    write_json(cell_json, {**record, "hash": digest, "experiment": exp.name, "profile": exp.profile,
                           "notes": exp.notes, "git": git_version()})


def _checkpoint_path(rdir: Path, epoch: int) -> Path:
    return rdir / f"ckpt_epoch{epoch:03d}.pt"


def _train_run(run: Run, rdir: Path, cfg: TrainConfig, data, keep: list[int], samples,
               status: Callable[[str], None]) -> tuple[list[dict], str, str]:
    """Train (or resume) the run, keeping a checkpoint at every epoch of `keep`.

    Returns (history, state, message): the epoch records, "completed" or "diverged", and the divergence's
    one-line message. Raises `Interrupted` when a signal stopped training.
    """
    m = run.measure
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)

    def save(model: nn.Module, epoch: int, step: int) -> None:
        save_checkpoint(_checkpoint_path(rdir, epoch), model,
                        meta={"model": model.build_spec, "data": data.spec, "epoch": epoch, "step": step,
                              "cell": run.cell, "seed": run.seed})

    if 0 in keep and not _checkpoint_path(rdir, 0).exists():
        from landscape.models import build

        save(build(cfg.model, resolved_model_config(cfg, data)), 0, 0)

    def at_epoch_end(epoch: int, model: nn.Module, record: dict) -> None:
        if epoch in keep:
            save(model, epoch, epoch * steps_per_epoch)
        status(f"train {epoch}/{cfg.epochs}")

    callbacks = []
    if "steps" in m:  # landscape.probes' training callback: the step's batch, train mode, OUT/probes.jsonl
        from landscape.probes import make_probe_callback

        metrics = m["steps"]["metrics"]
        callbacks.append(make_probe_callback(
            metrics, m["steps"]["every"], out=rdir, steps_per_epoch=steps_per_epoch, batch_size=m["batch_size"],
            loss_fn=training_loss(cfg),
            measurement_set=samples[0] if "singularity" in metrics else None))
    cfg.resume = (rdir / "checkpoint.pt").exists()
    status("train")
    try:
        result = train(cfg, step_callbacks=callbacks, epoch_callbacks=[at_epoch_end], handle_signals=True)
    except NonFiniteLoss as e:
        return _jsonl(rdir / "metrics.jsonl"), "diverged", first_line(e)
    if result["status"] == "interrupted":
        raise Interrupted(result.get("signal") or signal.SIGINT)
    return result["history"], "completed", ""


def _measure_epochs(run: Run, rdir: Path, epochs: list[int], samples, device: torch.device,
                    status: Callable[[str], None]) -> dict[int, dict]:
    """{epoch: summary} of every epoch's checkpoint, measuring those without measure/epochNNN.json."""
    m = run.measure
    measured: dict[int, dict] = {}
    for epoch in epochs:
        jpath = rdir / "measure" / f"epoch{epoch:03d}.json"
        if not jpath.exists():
            status(f"measure epoch {epoch}")
            summary, arrays = measure_epoch(_checkpoint_path(rdir, epoch), run, samples, device)
            sd = arrays.pop("spectrum", None)
            if sd is not None:  # the one spectrum format, beside the epoch's summary
                write_spectrum(jpath.with_suffix(""), sd, eps=m["spectrum"]["eps"],
                               meta={"epoch": epoch, "step": summary["step"], "cell": run.cell, "seed": run.seed,
                                     "n_samples": summary["spectrum"]["n_samples"]})
            if arrays:
                write_npz(jpath.with_suffix(".npz"), **arrays)
            write_json(jpath, summary)
        measured[epoch] = json.loads(jpath.read_text())
    return measured


def write_result(run: Run, rdir: Path, history: list[dict], state: str, message: str, trained: int,
                 measured: dict[int, dict]) -> dict:
    """result.json of one run from its plain records (keys.py's definitions), written atomically.

    Args:
        run: the run.
        rdir: its directory.
        history: the epoch records.
        state: "completed" or "diverged".
        message: the divergence's message ("" when completed).
        trained: the epochs trained.
        measured: {epoch: measurement}.

    Returns:
        The result dict.
    """
    final = train_keys(history, run.target_acc)
    measured_final, from_epoch = final_keys(measured)
    final.update(measured_final)
    final.update(step_keys(_jsonl(rdir / "probes.jsonl")))
    result = {"cell": run.cell, "base": run.base, "label": run.label, "note": run.note, "setting": run.setting,
              "seed": run.seed,
              "status": state, "message": message, "epochs_trained": trained,
              "measured_epochs": sorted(measured), "final": final, "from_epoch": from_epoch,
              "init": measurement_keys(measured[0]) if 0 in measured else {}}
    write_json(rdir / "result.json", result)
    return result


def refresh_result(run: Run, rdir: Path) -> dict:
    """Re-derive a finished run's result.json from its files (metrics.jsonl, measure/epochNNN.json,
    probes.jsonl) with today's key definitions; training and measurement are not repeated.

    Args:
        run: the run.
        rdir: its finished directory.

    Returns:
        The new result dict.
    """
    old = json.loads((rdir / "result.json").read_text())
    measured = {int(p.stem[5:]): json.loads(p.read_text()) for p in sorted((rdir / "measure").glob("epoch*.json"))}
    return write_result(run, rdir, _jsonl(rdir / "metrics.jsonl"), old["status"], old.get("message", ""),
                        old["epochs_trained"], {e: m for e, m in measured.items() if e in old["measured_epochs"]})


def run_experiment(exp: Experiment, out: Path, *, only: str | None = None, device: str | None = None,
                   progress: bool | None = None) -> dict:
    """Run (or resume) every selected run of `exp` into `out`; returns the summary (also written as
    OUT/summary.json and OUT/summary.md, also after an interruption). progress: a bar over the runs on
    stderr (None: when stderr is a terminal).

    Args:
        exp: the resolved experiment.
        out: the output directory.
        only: an fnmatch pattern of the cells to run (None: all).
        device: where to run (None: the experiment's device).
        progress: a bar over the runs on stderr (None: when stderr is a terminal).

    Returns:
        The summary dict.
    """
    out = Path(out)
    dev = resolve_device(device or exp.device)
    if exp.threads is not None:
        torch.set_num_threads(exp.threads)
    runs = [r for r in exp.runs if only is None or fnmatch.fnmatchcase(r.cell, only)]
    if not runs:
        names = ", ".join(dict.fromkeys(r.cell for r in exp.runs))
        raise LandscapeError(f"--only {only!r} matches no cell; cells: {names}")
    record_path = out / "experiment.json"
    if record_path.exists():
        old = json.loads(record_path.read_text())
        if old.get("name") != exp.name or old.get("profile") != exp.profile:
            raise LandscapeError(f"{out} holds {old.get('name')}/{old.get('profile')}, not "
                                 f"{exp.name}/{exp.profile}; choose another --out")
    prepare_out_dir(out)
    write_json(record_path, {**exp.record(), "git": git_version(), "device": str(dev), "argv": sys.argv})
    bar = progress_bar(runs, desc=exp.name, enabled=progress, unit="run")
    try:
        for run in bar:
            if (out / run.path / "done.json").exists():
                bar.set_postfix_str(f"{run.path} done")
                if (out / run.path / "result.json").exists():
                    refresh_result(run, out / run.path)
                continue
            run_one(run, out, exp, dev, lambda s, run=run: bar.set_postfix_str(f"{run.path}: {s}"))
    finally:
        bar.close()
        summary = summarize(exp, out)
        write_json(out / "summary.json", summary)
        (out / "summary.md").write_text(f"# {exp.name} ({exp.profile})\n\n{headline_table(summary, exp.headline)}\n")
    return summary
