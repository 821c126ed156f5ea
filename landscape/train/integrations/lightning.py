"""The curvature monitor as a Lightning callback (optional: needs the `lightning` extra).

    cb = LightningCurvatureCallback(probe_set, F.cross_entropy, every=50)
    trainer = lightning.Trainer(callbacks=[cb], ...)
    trainer.fit(module)                    # "curvature/..." logged with pl_module.log_dict at those steps

After every optimizer step whose `trainer.global_step` is divisible by `every`, the callback measures λmax,
eos_ratio and the preconditioned sharpness (Adam/AdamW) of `loss_fn(model(inputs), targets)` on the fixed
`data` (`landscape.hessian.CurvatureMonitor`, docs/methods.md §G) and logs them through the module's logger;
they also land in `trainer.callback_metrics`. `model` picks what is measured when the LightningModule's forward
is not the network (e.g. `model=lambda m: m.net`); the first optimizer of the trainer is the one read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from landscape.hessian import MonitorOptions
from landscape.train.integrations.monitoring import LOGGED_OPTIONS, PREFIX, CurvatureLog

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name of the same framework
    from pytorch_lightning import Callback


class LightningCurvatureCallback(Callback):
    """Log curvature every `every` optimizer steps of a Lightning `Trainer`.

    Args:
        data: the measurement set (tensors, (X, y), a DataLoader, dict batches...).
        loss_fn: `loss_fn(outputs, targets)` (batch mean); None: the model's own loss (HF models).
        every: optimizer steps between measurements.
        model: `model(pl_module)` → the nn.Module measured (default: the LightningModule itself).
        prefix: prepended to every logged name.
        options: the monitor's `MonitorOptions` (default `LOGGED_OPTIONS`: λmax, eos_ratio and the
            preconditioned λmax).
    """

    def __init__(self, data: Any, loss_fn: Callable | None = None, *, every: int = 50,
                 model: Callable[[Any], nn.Module] | None = None, prefix: str = PREFIX,
                 options: MonitorOptions = LOGGED_OPTIONS):
        super().__init__()
        self.curvature = CurvatureLog(data, loss_fn, every=every, prefix=prefix, options=options)
        self.pick = model

    @property
    def history(self) -> list[dict]:
        """One {"step": s, name: value} per measurement."""
        return self.curvature.history

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Lightning's hook after each training batch: measure when due and log the values through `pl_module.log_dict`.

        Args:
            trainer: the Lightning Trainer (its global_step and optimizers).
            pl_module: the LightningModule.
            outputs: the step's outputs (unused).
            batch: the batch (unused).
            batch_idx: its index (unused).
        """
        step = int(trainer.global_step)
        if not self.curvature.due(step):
            return
        model = pl_module if self.pick is None else self.pick(pl_module)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        values = self.curvature.measure(model, step, optimizer)
        pl_module.log_dict(values, on_step=True, on_epoch=False)
