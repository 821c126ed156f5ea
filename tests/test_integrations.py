"""The curvature callbacks for HF transformers and Lightning: a few real training steps on CPU, and the logged
λmax, preconditioned λmax and eos_ratio checked against exact float64 Hessians of the trained parameter subset
at the very parameters and optimizer state of each measured step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from landscape.hessian import MonitorOptions, exact_hessian
from landscape.train.integrations.monitoring import LOGGED, CurvatureLog, unwrap_optimizer

D = torch.float64
TIGHT = MonitorOptions(metrics=LOGGED, tol=1e-9, max_matmats=300, k=1)


def _flat_state(optimizer, params):
    """Adam's preconditioner P = (1 − β1^t)(√(v/(1 − β2^t)) + ε) over `params`, from a snapshot of its state."""
    group = optimizer.param_groups[0]
    b1, b2 = group["betas"]
    parts = []
    for p in params:
        st = optimizer.state[p]
        t = float(st["step"])
        parts.append(((1 - b1 ** t) * ((st["exp_avg_sq"].double() / (1 - b2 ** t)).sqrt() + group["eps"])).reshape(-1))
    return torch.cat(parts)


def test_unwrap_and_due():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

    class Wrapper:
        def __init__(self, inner):
            self.optimizer = inner

    assert unwrap_optimizer(Wrapper(opt)) is opt and unwrap_optimizer(opt) is opt and unwrap_optimizer(None) is None
    log = CurvatureLog((torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)), F.cross_entropy, every=2)
    assert [s for s in range(6) if log.due(s)] == [2, 4]


def test_hf_trainer_callback_logs_exact_curvature_of_the_trained_block(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from landscape.train.integrations.hf import CurvatureCallback
    from tests.objective import hf

    model = hf.gpt2()
    trained = ["transformer.ln_f.weight", "transformer.ln_f.bias", "transformer.h.0.mlp.c_proj.weight"]
    for n, p in model.named_parameters():
        p.requires_grad_(n in trained)
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(1, hf.VOCAB, (8, 6), generator=g)]
    probe = hf.token_batches()   # the measurement set: padded dict batches, the model's own loss
    cb = CurvatureCallback(probe, every=2, options=TIGHT)
    snaps = {}

    class Snapshot(transformers.TrainerCallback):   # runs after `cb`: the parameters and state it measured
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
            if state.global_step % 2 == 0:
                inner = unwrap_optimizer(optimizer)
                params = [p for p in model.parameters() if p.requires_grad]
                snaps[state.global_step] = (copy.deepcopy(model), _flat_state(inner, params), inner.param_groups[0])

    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4,
                                          learning_rate=0.05, lr_scheduler_type="constant", weight_decay=0.0,
                                          report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                                          logging_steps=1)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[cb, Snapshot()])
    trainer.train()
    logged = [r for r in trainer.state.log_history if "curvature/lambda_max" in r]
    assert [r["step"] for r in logged] == [2, 4] == sorted(snaps)
    for row in logged:
        snap, P, group = snaps[row["step"]]
        H = exact_hessian(snap.eval(), None, probe)
        assert row["curvature/lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-7)
        d = P.rsqrt()
        pre = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :])[-1])
        assert row["curvature/preconditioned_lambda_max"] == pytest.approx(pre, rel=1e-7)
        b1 = group["betas"][0]
        assert row["curvature/eos_ratio"] == pytest.approx(pre * group["lr"] * (1 - b1) / (2 + 2 * b1), rel=1e-7)
    assert cb.history == [{k: v for k, v in r.items() if k != "step"} | {"step": r["step"]} for r in logged]


def test_hf_callback_attached_logs_through_the_trainer(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from landscape.train.integrations.hf import CurvatureCallback
    from tests.objective import hf

    model = hf.gpt2()
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(1, hf.VOCAB, (4, 6))]
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                                          report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows)
    cb = CurvatureCallback(hf.token_batches(), every=1, options=MonitorOptions(metrics=("lambda_max",))).attach(trainer)
    trainer.train()
    logged = [r for r in trainer.state.log_history if "curvature/lambda_max" in r]
    assert [r["step"] for r in logged] == [1, 2] and "epoch" in logged[0]   # trainer.log adds the epoch
    assert [r["curvature/lambda_max"] for r in logged] == [h["curvature/lambda_max"] for h in cb.history]


def test_lightning_callback_logs_exact_curvature_under_sgd(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from landscape.train.integrations.lightning import LightningCurvatureCallback

    torch.manual_seed(0)
    X, y = torch.randn(32, 5, dtype=D), torch.randint(0, 3, (32,))
    probe = (X[:16], y[:16])

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).to(D)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.3, momentum=0.5)

    snaps = {}

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snaps[trainer.global_step] = copy.deepcopy(pl_module.net)

    cb = LightningCurvatureCallback(probe, F.cross_entropy, every=3, model=lambda m: m.net, options=TIGHT)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=8)
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb, Snapshot()],
                         default_root_dir=str(tmp_path))
    trainer.fit(Module(), loader)
    assert [h["step"] for h in cb.history] == [3, 6]
    for h in cb.history:
        lam = float(torch.linalg.eigvalsh(exact_hessian(snaps[h["step"]].eval(), F.cross_entropy, probe))[-1])
        assert h["curvature/lambda_max"] == pytest.approx(lam, rel=1e-7)
        assert h["curvature/eos_ratio"] == pytest.approx(lam * 0.3 * 1 / (2 + 2 * 0.5), rel=1e-7)   # (1−d)/(2+2β)
        assert "curvature/preconditioned_lambda_max" not in h   # SGD: no preconditioner
    last = cb.history[-1]
    assert float(trainer.callback_metrics["curvature/lambda_max"]) == pytest.approx(last["curvature/lambda_max"])
