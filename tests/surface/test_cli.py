"""`python -m landscape.surface`: outputs against the model's own loss, resume, two gloo ranks, one-line errors."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.cli import Interrupted, run_cli
from landscape.surface.__main__ import main, parse_grid


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Two small FC checkpoints (different seeds) on MNIST-1D, a 4-epoch trajectory, and a wider model."""
    from landscape.checkpoint import save_checkpoint
    from landscape.data import load_data
    from landscape.models import build

    tmp = tmp_path_factory.mktemp("surface_cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("LANDSCAPE_CACHE", str(tmp / "cache"))
    data = load_data("mnist1d", n_samples=200)
    paths = []
    g = torch.Generator().manual_seed(0)
    for seed in (0, 1):
        model = build("fc", kind="residual", depth=2, width=8, seed=seed)
        paths.append(tmp / f"ck{seed}.pt")
        save_checkpoint(paths[-1], model, meta={"model": model.build_spec, "data": data.spec, "epoch": 0})
    for e in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        save_checkpoint(tmp / "run" / "epochs" / f"epoch_{e:04d}.pt", model, meta={"model": model.build_spec,
                                                                                   "data": data.spec, "epoch": e})
    wide = build("fc", kind="residual", depth=2, width=9)
    save_checkpoint(tmp / "wide.pt", wide, meta={"model": wide.build_spec, "data": data.spec, "epoch": 0})
    for seed in (0, 1):  # BatchNorm nets whose running statistics are those of their weights on 60 samples
        bn_net = build("fc", kind="residual", depth=3, width=8, block="preact", norm="bn", seed=seed)
        norms = [m for m in bn_net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        with torch.no_grad():
            bn_net.train()(data.X[:60])
        for m in norms:
            m.momentum = 0.1
        save_checkpoint(tmp / f"bn{seed}.pt", bn_net.eval(), meta={"model": bn_net.build_spec, "data": data.spec,
                                                                  "epoch": 0})
    yield tmp, paths, data
    mp.undo()


def _loss(path, data, n):
    from landscape.checkpoint import load_checkpoint

    model, _ = load_checkpoint(path)
    with torch.no_grad():
        return float(F.cross_entropy(model(data.X[:n]), data.y[:n]))


def test_random_surface_files_and_the_origin_is_the_checkpoints_loss(ckpts):
    tmp, (ck0, _), data = ckpts
    out = tmp / "random"
    argv = [str(ck0), "--grid", "-1:1:5", "--n-samples", "60", "--out", str(out), "--no-progress", "--h5"]
    assert run_cli(main, argv) == 0
    with np.load(out / "surface.npz") as z:
        assert z["loss"].shape == (5, 5) and z["accuracy"].shape == (5, 5)
        np.testing.assert_allclose(z["x"], [-1, -0.5, 0, 0.5, 1])
        assert z["loss"][2, 2] == pytest.approx(_loss(ck0, data, 60), rel=1e-5)
        assert json.loads(str(z["meta"]))["norm"] == "filter"
    s = json.loads((out / "surface.json").read_text())
    assert s["min_loss"] == pytest.approx(float(np.min(np.load(out / "surface.npz")["loss"])))
    assert s["sharpness"][0]["radius"] == 0.1 and s["settings"]["n_samples"] == 60
    for name in ("surface_contour.png", "surface_contour.pdf", "surface_3d.png", "surface.h5"):
        assert (out / name).stat().st_size > 0
    assert not (out / "surface_state.npz").exists()


def test_interp_path_ends_at_both_checkpoints_and_reports_barriers(ckpts):
    tmp, (ck0, ck1), data = ckpts
    out = tmp / "interp"
    argv = [str(ck0), "--directions", "interp", "--to", str(ck1), "--grid", "0:1:3", "--path", "bezier",
            "--bezier-steps", "5", "--n-samples", "60", "--out", str(out), "--no-progress"]
    assert run_cli(main, argv) == 0
    with np.load(out / "surface.npz") as z:
        assert z["loss"].shape == (3,)
        np.testing.assert_allclose(z["loss"][[0, -1]], [_loss(ck0, data, 60), _loss(ck1, data, 60)], rtol=1e-5)
    s = json.loads((out / "surface.json").read_text())
    assert s["barrier_linear"] >= 0 and s["barrier_bezier"] >= 0 and s["dims"] == 1
    assert (out / "surface_1d.png").exists()


def test_interp_between_batchnorm_checkpoints_gives_every_point_its_own_statistics(ckpts, capsys):
    """The default recomputes each point's BatchNorm statistics: t = 1 is B's own loss (A's stored statistics
    at every point gave another), and the barrier is the library's, whose values equal a hand computation
    (tests/surface/test_paths.py); --bn eval, one checkpoint's statistics for the whole path, is refused."""
    from landscape.checkpoint import load_checkpoint
    from landscape.surface import linear_path, parameters_of

    tmp, _, data = ckpts
    bn0, bn1 = tmp / "bn0.pt", tmp / "bn1.pt"
    common = [str(bn0), "--directions", "interp", "--to", str(bn1), "--n-samples", "60", "--batch-size", "60",
              "--no-progress"]
    assert run_cli(main, [*common, "--grid", "0:1:3", "--out", str(tmp / "bn_interp")]) == 0
    s = json.loads((tmp / "bn_interp" / "surface.json").read_text())
    with np.load(tmp / "bn_interp" / "surface.npz") as z:
        np.testing.assert_allclose(z["loss"][[0, -1]], [_loss(bn0, data, 60), _loss(bn1, data, 60)], rtol=1e-5)
    a, b = (parameters_of(load_checkpoint(p)[0]) for p in (bn0, bn1))
    model = load_checkpoint(bn0)[0]
    path = linear_path(model, F.cross_entropy, (data.X[:60], data.y[:60]), a, b, n=21, batch_size=60)
    assert s["barrier_linear"] == pytest.approx(path.barrier, rel=1e-5, abs=1e-7)
    assert s["settings"]["bn"] == "recompute" and s["path_linear"]["bn"] == "recompute"
    capsys.readouterr()
    assert run_cli(main, [*common, "--bn", "eval", "--out", str(tmp / "bn_eval")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "running statistics at every point" in err[0], err


def test_bezier_seconds_count_the_curves_training(ckpts, capsys):
    tmp, (ck0, ck1), _ = ckpts
    argv = [str(ck0), "--directions", "interp", "--to", str(ck1), "--grid", "0:1:3", "--path", "bezier",
            "--bezier-steps", "3", "--n-samples", "30", "--out", str(tmp / "timed"), "--no-progress", "--threads", "1"]
    assert run_cli(main, argv) == 0
    s = json.loads((tmp / "timed" / "surface.json").read_text())
    assert 0 < s["seconds_bezier_training"] < s["seconds_paths"] < s["seconds"]
    assert s["seconds_grid"] + s["seconds_paths"] <= s["seconds"] and s["threads"] == 1
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["seconds"] == s["seconds"] and printed["seconds_bezier_training"] == s["seconds_bezier_training"]


def test_a_grid_narrower_than_the_trajectory_is_warned_about(ckpts, capsys):
    tmp, (_, ck1), _ = ckpts
    argv = [str(ck1), "--directions", "pca", "--trajectory", str(tmp / "run"), "--grid", "-0.01:0.01:3",
            "--n-samples", "20", "--out", str(tmp / "pca_narrow"), "--no-progress"]
    assert run_cli(main, argv) == 0
    with np.load(tmp / "pca_narrow" / "surface.npz") as z:
        off = int(((np.abs(z["trajectory"]) > 0.01).any(1)).sum())
    assert off > 0
    err = capsys.readouterr().err
    assert f"warning: {off} of 5 trajectory points lie outside the grid" in err
    assert json.loads((tmp / "pca_narrow" / "surface.json").read_text())["trajectory_outside_grid"] == off


def test_pca_trajectory_is_projected_with_its_explained_variance(ckpts):
    tmp, (ck0, ck1), _ = ckpts
    out = tmp / "pca"
    argv = [str(ck1), "--directions", "pca", "--trajectory", str(tmp / "run"), "--grid", "-4:4:4", "--n-samples",
            "40", "--out", str(out), "--no-progress"]
    assert run_cli(main, argv) == 0
    with np.load(out / "surface.npz") as z:
        assert z["trajectory"].shape == (5, 2)   # the 4 epochs and the checkpoint at the origin
        ev = z["explained_variance_ratio"]
        assert ev.shape == (2,) and 0 < ev[1] <= ev[0] <= 1


def test_resume_continues_an_interrupted_grid_to_the_same_result(ckpts, monkeypatch):
    import landscape.surface as S

    tmp, (ck0, _), _ = ckpts
    base = [str(ck0), "--grid", "-1:1:5", "--n-samples", "40", "--no-progress", "--seed", "3"]
    assert run_cli(main, [*base, "--out", str(tmp / "whole")]) == 0
    real = S.evaluate_grid

    def stopped(*a, on_state, **kw):
        def save_then_stop(st):
            on_state(st)
            raise Interrupted(signal.SIGTERM)
        return real(*a, on_state=save_then_stop, **kw)

    monkeypatch.setattr(S, "evaluate_grid", stopped)
    assert run_cli(main, [*base, "--out", str(tmp / "part")]) == 143
    with np.load(tmp / "part" / "surface_state.npz") as z:
        assert 0 < z["done"].sum() < 25
    monkeypatch.setattr(S, "evaluate_grid", real)
    assert run_cli(main, [*base, "--out", str(tmp / "part"), "--seed", "4", "--resume"]) == 2  # other settings
    assert run_cli(main, [*base, "--out", str(tmp / "part"), "--resume"]) == 0
    with np.load(tmp / "whole" / "surface.npz") as a, np.load(tmp / "part" / "surface.npz") as b:
        np.testing.assert_array_equal(a["loss"], b["loss"])


@pytest.mark.slow  # two processes each import torch and the models: 10-30 s on 2 shared cores
def test_two_gloo_ranks_give_the_same_grid_as_one(ckpts):
    from tests.ranks import launch

    tmp, (ck0, _), _ = ckpts
    args = [str(ck0), "--grid", "-1:1:4", "--dims", "2", "--n-samples", "50", "--no-progress", "--device", "cpu"]
    assert run_cli(main, [*args, "--out", str(tmp / "one")]) == 0
    results = launch(["-m", "landscape.surface", *args, "--out", str(tmp / "two")], world=2)
    assert all(r.returncode == 0 for r in results), [r.stderr[-500:] for r in results]
    with np.load(tmp / "one" / "surface.npz") as a, np.load(tmp / "two" / "surface.npz") as b:
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-6)
    assert json.loads((tmp / "two" / "surface.json").read_text())["ranks"] == 2


@pytest.mark.parametrize("extra, message", [
    (["--grid", "1:-1:5"], "START < STOP"),
    (["--grid", "a:b"], "grid must be START:STOP:NUM"),
    (["--directions", "interp"], "needs --to"),
    (["--directions", "interp", "--to", "WIDE"], "does not match"),
    (["--directions", "pca", "--trajectory", "EMPTY"], "need at least 3 checkpoints"),
    (["--directions", "pca", "--trajectory", "EMPTY", "--dims", "1"], "need at least 2 checkpoints"),
    (["--grid", "-1:1"], "argument --grid: grid must be START:STOP:NUM"),
    (["--threads", "0"], "argument --threads: must be a positive integer"),
    (["--directions", "interp", "--to", "CK1", "--dims", "2"], "1-D path"),
    (["--out", "FILE"], "not a directory"),
    (["--directions", "file", "--direction-file", "BADDIR", "--dims", "1"], "has shape"),
    (["--directions", "file", "--direction-file", "BADDIR"], "expected 2 direction(s)"),
    (["--n-samples", "100000"], "--n-samples must be in"),
])
def test_bad_input_exits_2_with_one_line(ckpts, capsys, extra, message):
    tmp, (ck0, ck1), _ = ckpts
    (tmp / "empty" / "epochs").mkdir(parents=True, exist_ok=True)
    (tmp / "a_file").write_text("x")
    torch.save([{"blocks.0.branch.linear.weight": torch.zeros(3, 3)}], tmp / "bad_dir.pt")
    subst = {"BADDIR": str(tmp / "bad_dir.pt"),
             "WIDE": str(tmp / "wide.pt"), "EMPTY": str(tmp / "empty"), "CK1": str(ck1), "FILE": str(tmp / "a_file")}
    extra = [subst.get(a, a) for a in extra]
    out = [] if "--out" in extra else ["--out", str(tmp / "bad")]
    code = run_cli(main, [str(ck0), "--no-progress", *out, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err       # usage errors too: no usage text


def test_directions_from_a_file_equal_the_same_random_directions(ckpts):
    from landscape.checkpoint import load_checkpoint
    from landscape.surface import random_directions

    tmp, (ck0, _), _ = ckpts
    model, _ = load_checkpoint(ck0)
    torch.save(random_directions(model, 2, seed=3), tmp / "dirs.pt")
    common = ["--grid", "-1:1:3", "--n-samples", "30", "--no-progress"]
    assert run_cli(main, [str(ck0), *common, "--seed", "3", "--out", str(tmp / "r3")]) == 0
    assert run_cli(main, [str(ck0), *common, "--directions", "file", "--direction-file", str(tmp / "dirs.pt"),
                          "--out", str(tmp / "f3")]) == 0
    with np.load(tmp / "r3" / "surface.npz") as a, np.load(tmp / "f3" / "surface.npz") as b:
        np.testing.assert_array_equal(a["loss"], b["loss"])


def test_parse_grid():
    np.testing.assert_allclose(parse_grid("-1:1:3"), [-1, 0, 1])
    with pytest.raises(Exception, match="NUM ≥ 2"):
        parse_grid("0:1:1")
