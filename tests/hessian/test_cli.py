"""`python -m landscape.hessian`: outputs against the exact Hessian, user models, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.cli import run_cli
from landscape.hessian import exact_ggn, exact_hessian
from landscape.hessian.__main__ import main

KEYS = (
    "lambda_max",
    "lambda_min",
    "trace",
    "trace_stderr",
    "negative_ratio",
    "degenerate_ratio",
    "top_eigenvalues",
    "n_params",
    "n_samples",
    "iters",
    "probes",
    "seconds",
    "device",
    "torch_version",
    "grid",
    "density",
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small FC checkpoint (490 parameters) on 200 MNIST-1D samples, and its exact spectra."""
    from landscape.checkpoint import save_checkpoint
    from landscape.data import load_data
    from landscape.models import build

    tmp = tmp_path_factory.mktemp("hessian_cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("LANDSCAPE_CACHE", str(tmp / "cache"))
    data = load_data("mnist1d", n_samples=200)
    model = build("fc", kind="residual", depth=2, width=8)
    path = tmp / "ckpt.pt"
    save_checkpoint(path, model, meta={"model": model.build_spec, "data": data.spec, "epoch": 0})
    X, y = data.X[:150], data.y[:150]
    eig_h = torch.linalg.eigvalsh(exact_hessian(model.eval(), F.cross_entropy, (X, y))).numpy()
    parts = list(zip(X.split(30), y.split(30)))  # the brute-force output-space Hessian is quadratic in batch size
    eig_g = torch.linalg.eigvalsh(exact_ggn(model, F.cross_entropy, parts)).numpy()
    yield path, tmp, eig_h, eig_g, model
    mp.undo()


def test_outputs_match_the_exact_spectrum(ckpt):
    path, tmp, eigs, _, _ = ckpt
    out = tmp / "out"
    argv = [
        str(path),
        "--n-samples",
        "150",
        "--batch-size",
        "64",
        "--iters",
        "60",
        "--probes",
        "4",
        "--top-k",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert run_cli(main, argv) == 0
    s = json.loads((out / "spectrum.json").read_text())
    assert all(k in s for k in KEYS)
    assert s["n_params"] == 490 and s["n_samples"] == 150 and s["iters"] == 60 and s["probes"] == 4
    assert s["lambda_max"] == pytest.approx(eigs.max(), rel=1e-5)
    np.testing.assert_allclose(s["top_eigenvalues"], eigs[::-1][:3], rtol=1e-4)
    assert abs(s["trace"] - eigs.sum()) < 4 * s["trace_stderr"]
    assert np.trapezoid(s["density"], s["grid"]) == pytest.approx(1.0, abs=1e-3)
    with np.load(out / "spectrum.npz") as f:
        assert f["nodes"].shape == (4, 60) and f["weights"].shape == (4, 60)
        np.testing.assert_allclose(f["weights"].sum(1), 1.0, rtol=1e-6)
    assert (out / "density.png").stat().st_size > 0


def test_ggn_operator(ckpt):
    path, tmp, _, eig_g, _ = ckpt
    out = tmp / "ggn"
    argv = [
        str(path),
        "--n-samples",
        "150",
        "--operator",
        "ggn",
        "--iters",
        "40",
        "--probes",
        "2",
        "--top-k",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert run_cli(main, argv) == 0
    s = json.loads((out / "spectrum.json").read_text())
    assert s["operator"] == "ggn"
    assert s["lambda_min"] > -1e-5 * s["lambda_max"]
    assert s["top_eigenvalues"][0] == pytest.approx(eig_g.max(), rel=1e-4)


def test_user_model_from_a_state_dict(ckpt, monkeypatch):
    from landscape.data import load_data

    path, tmp, eigs, _, model = ckpt
    (tmp / "my_models.py").write_text(
        "from landscape.models import build\n\n"
        "def make():\n    return build('fc', kind='residual', depth=2, width=8, seed=123)\n"
    )
    monkeypatch.syspath_prepend(str(tmp))
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp / "cache"))
    # a landscape checkpoint: the data set comes from its metadata
    out = tmp / "user"
    argv = [
        str(path),
        "--model",
        "my_models:make",
        "--n-samples",
        "150",
        "--iters",
        "30",
        "--probes",
        "2",
        "--top-k",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert run_cli(main, argv) == 0
    s = json.loads((out / "spectrum.json").read_text())
    assert s["top_eigenvalues"][0] == pytest.approx(eigs.max(), rel=1e-4)  # the saved weights, not seed 123's
    # a bare state_dict: the data set comes from --data
    weights = tmp / "weights.pt"
    torch.save(model.state_dict(), weights)
    argv[0] = str(weights)
    assert run_cli(main, [*argv, "--data", "mnist1d", "--split", "test"]) == 0
    s = json.loads((out / "spectrum.json").read_text())
    test = load_data("mnist1d", split="test")
    H = exact_hessian(model, F.cross_entropy, (test.X[:150], test.y[:150]))
    assert s["top_eigenvalues"][0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--iters", "0"], "--iters must be at least 1"),
        (["--iters", "491"], "cannot exceed the number of parameters"),
        (["--data", "imagenet"], "unknown data set"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--n-samples", "100000"], "--n-samples must be in"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(ckpt, capsys, extra, message):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    path, tmp, _, _, _ = ckpt
    assert run_cli(main, [str(path), "--out", str(tmp / "bad"), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_missing_checkpoint_from_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "landscape.hessian", str(tmp_path / "nope.pt"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_max_memory_cap_chunks_without_changing_the_answer(ckpt):
    path, tmp, _, eig_g, _ = ckpt
    spectra = {}
    for name, extra in (("free", []), ("capped", ["--max-memory", "64K"])):
        out = tmp / f"mem_{name}"
        argv = [str(path), "--n-samples", "150", "--operator", "ggn", "--iters", "30", "--probes", "2",
                "--top-k", "1", "--out", str(out), "--no-progress", *extra]
        assert run_cli(main, argv) == 0
        spectra[name] = json.loads((out / "spectrum.json").read_text())
    assert spectra["capped"]["lambda_max"] == pytest.approx(spectra["free"]["lambda_max"], rel=1e-5)
    assert spectra["capped"]["trace"] == pytest.approx(spectra["free"]["trace"], rel=1e-4)


@pytest.mark.parametrize("size", ["banana", "0", "-5M"])
def test_bad_max_memory_is_a_usage_error(ckpt, size, capsys):
    path, tmp, _, _, _ = ckpt
    with pytest.raises(SystemExit) as exc:
        main([str(path), "--out", str(tmp / "bad_mem"), "--max-memory", size])
    assert exc.value.code == 2 and "--max-memory" in capsys.readouterr().err
