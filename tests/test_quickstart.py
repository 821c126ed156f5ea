"""landscape.quickstart end to end at toy size, and the training-curve figure it draws."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from landscape import load_checkpoint, quickstart
from landscape.data import load_data
from landscape.errors import LandscapeError
from landscape.hessian import exact_hessian
from landscape.plots import plot_training_curves

pytestmark = pytest.mark.usefixtures("private_cache")


def test_plot_training_curves_draws_one_line_per_run(tmp_path):
    hist = {"a": [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.1},
                  {"epoch": 2, "train_loss": 1.0, "train_acc": 0.5}],
            "b": [{"epoch": 1, "train_loss": 3.0, "train_acc": 0.2}]}
    fig = plot_training_curves(hist, tmp_path / "curves.png", title="t")
    loss_ax, acc_ax = fig.axes
    assert [list(line.get_ydata()) for line in acc_ax.get_lines()] == [[0.1, 0.5], [0.2]]
    assert [line.get_label() for line in loss_ax.get_lines()] == ["a (n=1)", "b (n=1)"]
    assert loss_ax.get_yscale() == "log" and acc_ax.get_ylabel() == "training accuracy"
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "curves.pdf").stat().st_size > 0


def test_quickstart_runs_end_to_end_and_reuses_finished_runs(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig"), "--epochs", "2",
            "--depth", "3", "--width", "8", "--n-samples", "100", "--nets", "plain,ortho", "--device", "cpu"]
    assert quickstart.main(argv) == 0
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert [r["net"] for r in summary["nets"]] == ["plain", "ortho"]
    assert summary["setup"]["epochs"] == 2 and summary["setup"]["threads"] == 1
    for r in summary["nets"]:
        metrics = (tmp_path / "runs" / r["net"] / "metrics.jsonl").read_text().splitlines()
        assert json.loads(metrics[-1])["train_acc"] == r["train_acc"] and len(metrics) == 2
    for r in summary["nets"]:                                # the measured λmax is the exact one
        model, _ = load_checkpoint(tmp_path / "runs" / r["net"] / "checkpoint.pt")
        data = load_data("mnist1d", n_samples=100)
        H = exact_hessian(model.double(), F.cross_entropy, (data.X.double(), data.y))
        assert r["lambda_max"] == pytest.approx(torch.linalg.eigvalsh(H).max().item(), rel=1e-3)
        assert 0 <= r["degenerate_ratio"] <= 1 and 0 < r["grad_ratio_min"] <= r["grad_ratio_max"]
        assert 0 <= r["dead_frac"] <= 1
    for name in ("quickstart_spectra", "quickstart_grad_ratio"):
        assert (tmp_path / "fig" / f"{name}.png").stat().st_size > 0
    md = (tmp_path / "fig" / "quickstart_summary.md").read_text()
    assert "| orthogonal update |" in md and (tmp_path / "fig" / "quickstart_training.pdf").exists()
    assert "| plain |" in capsys.readouterr().out
    before = (tmp_path / "runs" / "plain" / "checkpoint.pt").read_bytes()
    assert quickstart.main(argv) == 0                         # finished runs are reused, not retrained
    assert (tmp_path / "runs" / "plain" / "checkpoint.pt").read_bytes() == before
    with pytest.raises(LandscapeError, match="unknown net"):
        quickstart.main([*argv, "--nets", "dense"])


def test_hyperparameters_have_one_source():
    """quickstart.SETUP is the only place the quickstart's sizes and optimizer are written: the CLI defaults are
    SETUP, the notebook builds its nets with quickstart.train_config from SMALL / SMOKE, and the README
    states SETUP's values."""
    from pathlib import Path

    import nbformat

    args = quickstart.build_parser().parse_args([])
    for key in ("depth", "width", "n_samples", "epochs", "seed", "measure_samples", "slq_iters", "slq_vectors"):
        assert getattr(args, key) == quickstart.SETUP[key], key
    cfg = quickstart.train_config(quickstart.SMALL, {"kind": "plain"})
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == tuple(quickstart.SETUP[k] for k in
                                                                        ("optimizer", "lr", "batch_size", "epochs"))
    assert cfg.model_config == {"kind": "plain", "depth": quickstart.SMALL["depth"], "width": quickstart.SMALL["width"]}
    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "00_quickstart.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "quickstart.train_config(" in code and "quickstart.SMOKE" in code and "quickstart.SMALL" in code
    for typed in ("lr=", "batch_size=", "optimizer=", "depth=", "width=", "epochs="):
        assert typed not in code, f"the notebook types {typed!r} instead of reading quickstart.SETUP"
    s = quickstart.SETUP
    readme = (root / "README.md").read_text()
    assert f"depth {s['depth']} × width {s['width']}" in readme and f"{s['epochs']} epochs" in readme
