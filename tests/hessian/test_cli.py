"""`python -m landscape.hessian`: outputs against the exact Hessian, user models, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.cli import run_cli
from landscape.hessian import exact_ggn, exact_hessian
from landscape.hessian.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

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
    "vectors",
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
        "--vectors",
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
    assert s["n_params"] == 490 and s["n_samples"] == 150 and s["iters"] == 60 and s["vectors"] == 4
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
        "--vectors",
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
        "--vectors",
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
        (["--iters", "0"], "argument --iters: must be a positive integer"),
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
        argv = [str(path), "--n-samples", "150", "--operator", "ggn", "--iters", "30", "--vectors", "2",
                "--top-k", "1", "--out", str(out), "--no-progress", *extra]
        assert run_cli(main, argv) == 0
        spectra[name] = json.loads((out / "spectrum.json").read_text())
    assert spectra["capped"]["lambda_max"] == pytest.approx(spectra["free"]["lambda_max"], rel=1e-5)
    assert spectra["capped"]["trace"] == pytest.approx(spectra["free"]["trace"], rel=1e-4)


@pytest.mark.parametrize("size", ["banana", "0", "-5M"])
def test_bad_max_memory_is_a_usage_error(ckpt, size, capsys):
    path, tmp, _, _, _ = ckpt
    assert run_cli(main, [str(path), "--out", str(tmp / "bad_mem"), "--max-memory", size]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("error: argument --max-memory")


# ---- bad input: exit 2, one line, before any compute, nothing lost ----

_MODELS = '''
import torch
from torch import nn
from landscape.models import build

def make():
    return build("fc", kind="residual", depth=2, width=8)

def other():
    return nn.Sequential(nn.Linear(40, 5), nn.ReLU(), nn.Linear(5, 10))

def dict_out():
    model = build("fc", kind="residual", depth=2, width=8)
    plain = model.forward
    model.forward = lambda x: {"logits": plain(x)}
    return model

def wrong_input():
    return nn.Sequential(nn.Linear(7, 10))

def not_a_module():
    return 3

class _Tokens(nn.Module):
    """MNIST-1D's 40 values as 10 tokens of 4, a default-settings nn.TransformerEncoder, a linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.enc(x.view(-1, 10, 4)).mean(1))

def transformer():
    return _Tokens()
'''


class _Evil:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def user(ckpt):
    """A module of user model builders beside the checkpoint, and weight files good and bad."""
    path, tmp, _, _, model = ckpt
    d = tmp / "user_files"
    d.mkdir(exist_ok=True)
    (d / "hcli_user_models.py").write_text(_MODELS)
    sys.path.insert(0, str(d))
    good = d / "good.pt"
    torch.save(model.state_dict(), good)
    (d / "empty.pt").write_bytes(b"")
    (d / "truncated.pt").write_bytes(good.read_bytes()[:300])
    nan = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(k for k, v in nan.items() if v.is_floating_point() and v.numel())
    nan[first].view(-1)[0] = float("nan")
    torch.save(nan, d / "nan.pt")
    torch.save({"x": _Evil(d / "pwned")}, d / "evil.pt")
    (d / "folder.pt").mkdir(exist_ok=True)
    yield d, first
    sys.path.remove(str(d))


def _refused(capsys, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.splitlines() == [err] and err.startswith("error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)
    return err


BAD_USER = [
    ("make", "empty.pt", ["file is empty"]),
    ("make", "folder.pt", ["is a directory"]),
    ("make", "truncated.pt", ["corrupt or truncated"]),
    ("make", "nan.pt", ["non-finite weights in", "1 of"]),
    ("other", "good.pt", ["do not fit --model", "missing: 0.weight", "unexpected:"]),
    ("make", "evil.pt", ["refused to load", "arbitrary code execution"]),
    ("dict_out", "good.pt", ["model hcli_user_models:dict_out on mnist1d inputs of shape [40]", "returns a dict"]),
    ("not_a_module", "good.pt", ["returned int, not an nn.Module"]),
]


@pytest.mark.parametrize(("fn", "weights", "fragments"), BAD_USER, ids=[f"{a}-{b}" for a, b, _ in BAD_USER])
def test_bad_user_models_and_weight_files(user, tmp_path, capsys, fn, weights, fragments):
    d, _ = user
    out = tmp_path / "out"
    argv = [str(d / weights), "--model", f"hcli_user_models:{fn}", "--data", "mnist1d", "--n-samples", "40",
            "--iters", "5", "--vectors", "1", "--top-k", "0", "--out", str(out), "--no-progress"]
    _refused(capsys, run_cli(main, argv), *fragments)
    assert not (d / "pwned").exists() and not (out / "spectrum.json").exists()


def test_default_attention_model_through_the_cli(user, tmp_path, capsys):
    """Fused SDPA attention has no double backward: the CLI runs it through the math kernel and says so."""
    d, _ = user
    sys.modules.pop("hcli_user_models", None)
    from hcli_user_models import transformer

    model = transformer().eval()
    torch.save(model.state_dict(), d / "transformer.pt")
    out = tmp_path / "tf"
    argv = [str(d / "transformer.pt"), "--model", "hcli_user_models:transformer", "--data", "mnist1d",
            "--n-samples", "16", "--iters", "20", "--vectors", "2", "--top-k", "1", "--out", str(out), "--no-progress"]
    assert run_cli(main, argv) == 0, capsys.readouterr().err
    s = json.loads((out / "spectrum.json").read_text())
    assert s["attention_kernel"] == "math" and s["model"] == "hcli_user_models:transformer"
    from landscape.data import load_data

    data = load_data("mnist1d", n_samples=s["data"].get("n_samples"))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        H = exact_hessian(model.double(), F.cross_entropy, (data.X[:16].double(), data.y[:16]))
    assert s["top_eigenvalues"][0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-4)


def test_wrong_input_shape_names_model_shape_and_torch_message(user, tmp_path, capsys):
    """The weights of a Linear(7, 10) on 40-feature inputs: the model's own error, in one line."""
    d, _ = user
    torch.save(torch.nn.Sequential(torch.nn.Linear(7, 10)).state_dict(), d / "wrong_input.pt")
    argv = [str(d / "wrong_input.pt"), "--model", "hcli_user_models:wrong_input", "--data", "mnist1d",
            "--out", str(tmp_path / "o"), "--no-progress"]
    _refused(capsys, run_cli(main, argv), "model hcli_user_models:wrong_input on mnist1d inputs of shape [40] "
             "fails: RuntimeError: mat1 and mat2 shapes cannot be multiplied")


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--sigma", "-1"], "argument --sigma: must be positive"),
    (["--sigma", "0"], "argument --sigma: must be positive"),
    (["--eps", "-1"], "argument --eps: must be positive"),
    (["--eps", "nan"], "argument --eps: must be positive"),
    (["--vectors", "0"], "argument --vectors: must be a positive integer"),
    (["--top-k", "-1"], "argument --top-k: must be a non-negative integer"),
    (["--probes", "4"], "unrecognized arguments: --probes"),
])
def test_bad_numbers_are_refused_before_loading(ckpt, monkeypatch, capsys, extra, fragment):
    from landscape import inputs as cli_inputs

    path, tmp, *_ = ckpt
    monkeypatch.setattr(cli_inputs, "load_inputs", lambda *a: pytest.fail("loaded before checking the flags"))
    _refused(capsys, run_cli(main, [str(path), "--out", str(tmp / "nums"), "--no-progress", *extra]), fragment)


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_bad_out_is_refused_before_any_compute(ckpt, tmp_path, monkeypatch, capsys, where):
    from landscape import inputs as cli_inputs

    path, *_ = ckpt
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    out = blocker / "sub" if where == "under_a_file" else blocker
    monkeypatch.setattr(cli_inputs, "load_inputs", lambda *a: pytest.fail("computed before checking --out"))
    _refused(capsys, run_cli(main, [str(path), "--out", str(out), "--no-progress"]), f"--out {out}")
    assert blocker.read_text() == "keep me"


def test_summary_line_error_bars_and_the_spectrum_file_round_trip(ckpt, capsys):
    from landscape.hessian.cli.spectrum_file import SCHEMA, read_spectrum

    path, tmp, eigs, _, _ = ckpt
    out = tmp / "summary"
    argv = [str(path), "--n-samples", "60", "--iters", "30", "--vectors", "2", "--top-k", "2", "--out", str(out),
            "--no-progress"]
    assert run_cli(main, argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("lambda_max", "lambda_max_stderr", "lambda_max_residual", "top_residuals", "top_converged"):
        assert key in line, key
    assert line["top_converged"] is True and 0 <= line["lambda_max_residual"] <= 1e-3 * line["lambda_max"]
    s = read_spectrum(out)
    assert s["schema"] == SCHEMA and s["vectors"] == 2 and s["dim"] == 490
    assert s["nodes"].shape == (2, 30) and isinstance(s["nodes"], np.ndarray)
    np.testing.assert_allclose(s["top_eigenvalues"], line["top_eigenvalues"])
    assert all(type(v).__module__ in ("builtins", "numpy") for v in s.values())  # plain data, no engine object


def test_too_few_samples_note(ckpt, monkeypatch, capsys):
    """When the solver reports λmax's data stderr above 5% of λmax, one line says what to do."""
    from landscape.hessian.cli.spectrum_file import read_spectrum
    from landscape.hessian.solvers.spectrum import SpectralDensity

    path, tmp, *_ = ckpt
    to_dict = SpectralDensity.to_dict
    monkeypatch.setattr(SpectralDensity, "to_dict",
                        lambda self, *a, **k: {**to_dict(self, *a, **k), "lambda_max_stderr": 0.06 * self.lambda_max,
                                               "lambda_max_noisy": True})
    argv = [str(path), "--n-samples", "50", "--iters", "10", "--vectors", "1", "--top-k", "0", "--out",
            str(tmp / "noisy"), "--no-progress"]
    assert run_cli(main, argv) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "too few samples" in ln]
    assert len(notes) == 1 and "use --n-samples 72 or more" in notes[0]  # 50 · (0.06 / 0.05)²
    split = read_spectrum(tmp / "noisy")["split_samples"]
    assert split == 200
    # more noise asks for more samples than the split holds (the old note said "use --n-samples 800"): it says so
    monkeypatch.setattr(SpectralDensity, "to_dict",
                        lambda self, *a, **k: {**to_dict(self, *a, **k), "lambda_max_stderr": 0.2 * self.lambda_max,
                                               "lambda_max_noisy": True})
    argv[argv.index("--out") + 1] = str(tmp / "noisier")
    assert run_cli(main, argv) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "too few samples" in ln]
    assert len(notes) == 1 and f"the split holds only {split} samples (about 800 needed" in notes[0], notes
    assert "--n-samples" not in notes[0]


def test_import_of_the_engine_loads_no_data_or_checkpoint_code():
    code = ("import sys, landscape.hessian; bad = [m for m in ('landscape.data', 'landscape.checkpoint', "
            "'landscape.plots', 'landscape.probes') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
