"""The curvature monitor as a `transformers.TrainerCallback` (optional: needs the `hf` extra).

    cb = CurvatureCallback(probe_batches, every=50)        # token dicts; loss_fn=None: the model's own loss
    trainer = Trainer(model, args, train_dataset=..., callbacks=[cb])
    trainer.train()                                        # trainer.state.log_history gets "curvature/..." rows

After every optimizer step whose global_step is divisible by `every`, the callback measures λmax, eos_ratio and
the preconditioned sharpness of the model's loss on the fixed `data` (`landscape.hessian.CurvatureMonitor`,
docs/methods.md §G; the Trainer's AdamW gives the preconditioned values, an SGD optimizer the plain eos_ratio).
The values go to `trainer.state.log_history` (saved in trainer_state.json) as {"step": s, "curvature/...": v}.
`CurvatureCallback(...).attach(trainer)` instead logs them through `trainer.log`, so every reporting integration
(TensorBoard, W&B...) receives them as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from landscape.hessian import MonitorOptions
from landscape.train.integrations.monitoring import LOGGED_OPTIONS, PREFIX, CurvatureLog


class CurvatureCallback(TrainerCallback):
    """Log curvature every `every` optimizer steps of a `transformers.Trainer`.

    Args:
        data: the measurement set (token dicts, (inputs, labels), a DataLoader...).
        loss_fn: None (the model's own loss) or `loss_fn(logits, labels)`.
        every: optimizer steps between measurements.
        prefix: prepended to every logged name.
        options: the monitor's `MonitorOptions` (default `LOGGED_OPTIONS`: λmax, eos_ratio and the
            preconditioned λmax).
    """

    def __init__(self, data: Any, loss_fn: Callable | None = None, *, every: int = 50,
                 prefix: str = PREFIX, options: MonitorOptions = LOGGED_OPTIONS):
        self.curvature = CurvatureLog(data, loss_fn, every=every, prefix=prefix, options=options)
        self.trainer = None

    @property
    def history(self) -> list[dict]:
        """One {"step": s, name: value} per measurement."""
        return self.curvature.history

    def attach(self, trainer: Any) -> CurvatureCallback:
        """Add this callback to `trainer` and log through `trainer.log` (every reporting integration sees it).

        Args:
            trainer: a `transformers.Trainer`.

        Returns:
            This callback.
        """
        trainer.add_callback(self)
        self.trainer = trainer
        return self

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        """transformers' hook after each optimizer step: measure when due and log the values.

        Args:
            args: the TrainingArguments.
            state: the TrainerState (its global_step).
            control: the TrainerControl, returned unchanged.
            model: the trained model.
            optimizer: the Trainer's optimizer.
            **kwargs: the Trainer's other callback arguments.

        Returns:
            control.
        """
        if model is None or not self.curvature.due(state.global_step):
            return control
        values = self.curvature.measure(model, state.global_step, optimizer)
        if self.trainer is not None:
            self.trainer.log(values)
        else:
            state.log_history.append({**values, "step": state.global_step})
        return control
