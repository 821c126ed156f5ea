"""landscape.train takes a loss: `--loss ce|mse|module:function`, checked against hand computations."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from landscape import train as T
from landscape.checkpoint import load_checkpoint
from landscape.cli import run_cli
from landscape.data import load_data
from landscape.errors import LandscapeError
from landscape.models import build
from landscape.train.losses import evaluation_loss, resolve_loss, square_loss, training_loss

# full-batch SGD without momentum: one step per epoch, so a run is a sequence of plain gradient steps
FULL_BATCH = {"model": "fc", "model_config": {"kind": "plain", "depth": 2, "width": 8}, "n_samples": 64,
              "batch_size": 64, "epochs": 2, "optimizer": "sgd", "momentum": 0.0, "lr": 0.05, "device": "cpu",
              "progress": False}

pytestmark = pytest.mark.usefixtures("shared_cache")


def test_square_loss_is_half_the_squared_error_to_one_hot_targets_averaged_over_samples():
    out = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1, 0])
    # by hand: sample 0: ½·0 = 0; sample 1: ½·(2 − 1)² = 0.5; sample 2: ½·((0.5 − 1)² + 0.5² + 3²) = 4.75
    assert square_loss(out, y).item() == pytest.approx((0 + 0.5 + 4.75) / 3)
    assert resolve_loss("mse") is square_loss and resolve_loss("ce") is F.cross_entropy


def test_a_module_function_spec_imports_the_function_and_builds_a_loss_class():
    assert resolve_loss("torch.nn.functional:cross_entropy") is F.cross_entropy
    loss = resolve_loss("torch.nn:CrossEntropyLoss")          # a class is instantiated, not called on data
    out, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    by_hand = (-torch.log_softmax(out, 1)[[0, 1], [0, 0]]).mean()
    assert loss(out, y).item() == pytest.approx(by_hand.item())
    smooth = training_loss({"loss": "ce", "label_smoothing": 0.2})
    # −(1 − ε) log p_y − (ε/C) Σ_c log p_c, by hand
    logp = torch.log_softmax(out, 1)
    by_hand = (-(0.8 * logp[[0, 1], [0, 0]]) - 0.1 * logp.sum(1)).mean()
    assert smooth(out, y).item() == pytest.approx(by_hand.item())
    assert evaluation_loss({"label_smoothing": 0.2}) is F.cross_entropy   # a config without "loss": the default


@pytest.mark.parametrize("spec, message", [
    ("hinge", "unknown loss 'hinge'; use ce, mse or module:function"),
    ("no_such_module_xyz:f", "cannot import no_such_module_xyz (ModuleNotFoundError"),
    ("math:no_such_function", "math has no attribute 'no_such_function'"),
    ("math:pi", "pi is a float, not a function"),
    ("landscape.errors:LandscapeError", "is a class but not an nn.Module loss"),
    ("torch.nn:Bilinear", "cannot build Bilinear() without arguments"),
    (":f", "write module:function"),
])
def test_a_bad_loss_spec_is_one_line(spec, message):
    with pytest.raises(LandscapeError) as e:
        T.TrainConfig(loss=spec).validate()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_label_smoothing_needs_the_cross_entropy():
    with pytest.raises(LandscapeError, match="label_smoothing applies to the cross-entropy"):
        T.TrainConfig(loss="mse", label_smoothing=0.1).validate()


def test_mse_training_takes_the_gradient_steps_of_the_square_loss_and_records_it(tmp_path):
    run = tmp_path / "run"
    result = T.train({**FULL_BATCH, "loss": "mse", "out": str(run)})
    cfg = T.TrainConfig.from_dict({**FULL_BATCH, "loss": "mse"})
    train, test = load_data(n_samples=64), load_data(split="test", n_samples=64)
    model = build("fc", T.resolved_model_config(cfg, train))        # the run's initialization (seed 0)
    losses = []
    for _ in range(2):                                               # two full-batch steps by hand
        out = model(train.X)
        loss = F.mse_loss(out, F.one_hot(train.y, 10).float(), reduction="sum") / (2 * len(train.y))
        losses.append(loss.item())
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= 0.05 * g
    for (name, a), b in zip(model.state_dict().items(), result["model"].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert [h["train_loss"] for h in result["history"]] == pytest.approx(losses, rel=1e-5)
    with torch.no_grad():
        test_loss = F.mse_loss(model(test.X), F.one_hot(test.y, 10).float(), reduction="sum") / (2 * len(test.y))
    assert result["final"]["test_loss"] == pytest.approx(test_loss.item(), rel=1e-5)
    assert json.loads((run / "config.json").read_text())["config"]["loss"] == "mse"
    _, meta = load_checkpoint(run / "checkpoint.pt")
    assert meta["train"]["loss"] == "mse" and evaluation_loss(meta["train"]) is square_loss
    with pytest.raises(LandscapeError, match="different configuration.*loss: 'mse' in the checkpoint vs 'ce'"):
        T.train({**FULL_BATCH, "epochs": 3, "out": str(run), "resume": True})


def test_a_custom_loss_from_the_command_line_is_the_one_descended(tmp_path, monkeypatch, capsys):
    """Loss 2·CE at step size η takes the steps of CE at 2η (its gradient is twice CE's), and records twice
    CE's loss."""
    (tmp_path / "twice.py").write_text("import torch.nn.functional as F\n\n"
                                       "def double_ce(out, y):\n    return 2 * F.cross_entropy(out, y)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["--model", "fc", "--model-config", json.dumps(FULL_BATCH["model_config"]), "--n-samples", "64",
            "--batch-size", "64", "--epochs", "2", "--optimizer", "sgd", "--momentum", "0", "--device", "cpu",
            "--no-progress"]
    assert run_cli(T.main, argv + ["--loss", "twice:double_ce", "--lr", "0.05", "--out", str(tmp_path / "a")]) == 0
    assert run_cli(T.main, argv + ["--lr", "0.1", "--out", str(tmp_path / "b")]) == 0
    (a, meta_a), (b, _) = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in ("a", "b"))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
    ha, hb = meta_a["history"], load_checkpoint(tmp_path / "b" / "checkpoint.pt")[1]["history"]
    assert [h["train_loss"] for h in ha] == pytest.approx([2 * h["train_loss"] for h in hb], rel=1e-5)
    assert meta_a["train"]["loss"] == "twice:double_ce"
    capsys.readouterr()
    assert run_cli(T.main, argv + ["--loss", "twice:nothing", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "twice has no attribute 'nothing'" in err
    assert not (tmp_path / "c").exists()


def test_a_loss_that_does_not_return_the_batch_mean_is_refused_before_training(tmp_path, monkeypatch):
    (tmp_path / "per_sample.py").write_text(
        "import torch.nn.functional as F\n\n"
        "def ce_none(out, y):\n    return F.cross_entropy(out, y, reduction='none')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LandscapeError, match=r"returns \[2\]; it must return the batch mean, a 0-dim tensor"):
        T.train({**FULL_BATCH, "loss": "per_sample:ce_none", "out": str(tmp_path / "r")})
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_without_a_loss_key_resumes_as_cross_entropy(tmp_path):
    run = tmp_path / "run"
    T.train({**FULL_BATCH, "epochs": 1, "out": str(run)})
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    del payload["meta"]["train"]["loss"]                           # as written before the option existed
    torch.save(payload, run / "checkpoint.pt")
    resumed = T.train({**FULL_BATCH, "out": str(run), "resume": True})
    assert resumed["epoch"] == 2


def test_fit_takes_a_loss_function_and_records_its_spec(tmp_path):
    from landscape import fit
    from landscape.train.losses import loss_spec

    assert loss_spec(F.cross_entropy) == "ce" and loss_spec(square_loss) == "mse"
    assert loss_spec(F.mse_loss) == "torch.nn.functional:mse_loss"
    result = fit({**FULL_BATCH, "epochs": 1, "out": str(tmp_path / "r")}, loss_fn=square_loss)
    assert result["config"]["loss"] == "mse"
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")[1]["train"]["loss"] == "mse"
    with pytest.raises(LandscapeError, match="cannot be recorded in the run's config"):
        fit({**FULL_BATCH, "epochs": 1}, loss_fn=lambda out, y: F.cross_entropy(out, y))
