"""Training losses by name: `--loss ce`, `--loss mse` or `--loss module:function`.

Every loss is a function `loss(output [B, C], target [B]) -> scalar`, the mean over the B samples of a
per-sample loss ℓ(f(x), y), with integer class labels as targets (the data sets stay as they are):

    ce    ℓ = −log softmax(f(x))_y  (with the run's label smoothing ε while training:
          ℓ = −(1 − ε) log p_y − (ε/C) Σ_c log p_c)
    mse   ℓ = ½ Σ_c (f_c(x) − e_y,c)²,  e_y the one-hot vector of y: the square loss of Cohen et al. 2021
          ("Gradient descent on neural networks typically occurs at the edge of stability", their
          experimental setup: one-hot targets, half the squared error summed over the C outputs, averaged
          over the samples), so its Hessian is the one whose λmax they compare with 2/η.
    module:function   any importable callable with that signature (an `nn.Module` class with a no-argument
          constructor is instantiated, e.g. `torch.nn:SmoothL1Loss`).

`training_loss(config)` is the loss the optimizer descends (label smoothing included); `evaluation_loss(config)`
is the same named loss without smoothing: the test loss of metrics.jsonl and what measurement after training
(Hessian spectra, surfaces) differentiates. Both read `config["loss"]`, which config.json and every checkpoint
record, so a measurement of a saved run uses the run's own loss.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError, first_line

Loss = Callable[[Tensor, Tensor], Tensor]
DEFAULT_LOSS = "ce"


def square_loss(output: Tensor, target: Tensor) -> Tensor:
    """Cohen et al.'s square loss on one-hot targets: mean over samples of ½ Σ_c (output_c − e_target,c)².

    Args:
        output: [B, C] network outputs.
        target: [B] integer class labels in 0..C−1.

    Returns:
        The 0-dim batch mean (1/B) Σ_i ½ ‖output_i − e_{target_i}‖².
    """
    one_hot = F.one_hot(target, output.shape[1]).to(output.dtype)
    return 0.5 * (output - one_hot).pow(2).sum(1).mean()


NAMED: dict[str, Loss] = {"ce": F.cross_entropy, "mse": square_loss}


def resolve_loss(spec: str, label_smoothing: float = 0.0) -> Loss:
    """The loss named by `spec` (module docstring), as a function `loss(output, target) -> batch mean`.

    Args:
        spec: "ce", "mse" or "module:function".
        label_smoothing: ε of the cross-entropy; must be 0 for any other loss.

    Returns:
        The loss function.

    Raises:
        LandscapeError: one line naming what is wrong with `spec` (unknown name, module not importable,
            attribute missing or not callable, label smoothing on a loss that has none).
    """
    if not isinstance(spec, str) or not spec:
        raise LandscapeError(f"loss must be ce, mse or module:function, got {spec!r}")
    if label_smoothing and spec != "ce":
        raise LandscapeError(f"label_smoothing applies to the cross-entropy (--loss ce) only, not --loss {spec}")
    if spec == "ce":
        return partial(F.cross_entropy, label_smoothing=label_smoothing) if label_smoothing else F.cross_entropy
    if spec in NAMED:
        return NAMED[spec]
    if ":" not in spec:
        raise LandscapeError(f"unknown loss {spec!r}; use {', '.join(NAMED)} or module:function")
    return _import_loss(spec)


def _import_loss(spec: str) -> Loss:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise LandscapeError(f"--loss {spec!r}: write module:function, e.g. mypackage.losses:focal")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure to import the user's module is bad input
        raise LandscapeError(f"--loss {spec}: cannot import {module_name} ({type(e).__name__}: "
                             f"{first_line(e)})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LandscapeError(f"--loss {spec}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise LandscapeError(f"--loss {spec}: {attr} is a class but not an nn.Module loss")
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - a loss class that needs arguments is bad input here
            raise LandscapeError(f"--loss {spec}: cannot build {attr}() without arguments "
                                 f"({type(e).__name__}: {first_line(e)})") from None
    if not callable(obj):
        raise LandscapeError(f"--loss {spec}: {attr} is a {type(obj).__name__}, not a function")
    return obj


def loss_spec(loss_fn: Loss) -> str:
    """The spec that `resolve_loss` turns back into `loss_fn`: "ce", "mse" or "module:qualname".

    Args:
        loss_fn: a loss function given in Python (`landscape.fit(config, loss_fn=...)`).

    Returns:
        Its spec, recorded in the run's config so a measurement after training rebuilds the same loss.

    Raises:
        LandscapeError: `loss_fn` is not importable by its module and qualified name (a lambda, a closure, a
            `functools.partial`, a module instance with its own settings): the run could not record it.
    """
    for name, fn in NAMED.items():
        if loss_fn is fn:
            return name
    module, qualname = getattr(loss_fn, "__module__", None), getattr(loss_fn, "__qualname__", None)
    spec = f"{module}:{qualname}"
    found = None
    if module and qualname and "<" not in qualname:
        try:
            found = _import_loss(spec)
        except LandscapeError:
            found = None
    if found is not loss_fn:
        raise LandscapeError(f"loss_fn {loss_fn!r} cannot be recorded in the run's config (not importable as "
                             "module:function); define it at the top level of an importable module, or pass "
                             "config.loss = 'module:function'")
    return spec


def training_loss(config: Mapping | object) -> Loss:
    """The loss a run descends: its named loss with its label smoothing.

    Args:
        config: a `TrainConfig` or its dict (config.json's "config", a checkpoint's meta["train"]); a missing
            "loss" key means cross-entropy (the default).

    Returns:
        The loss function.
    """
    get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    return resolve_loss(get("loss", DEFAULT_LOSS), get("label_smoothing", 0.0) or 0.0)


def evaluation_loss(config: Mapping | object) -> Loss:
    """The run's named loss without label smoothing: test metrics and measurement after training.

    Args:
        config: as in `training_loss`.

    Returns:
        The loss function.
    """
    get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    return resolve_loss(get("loss", DEFAULT_LOSS))


def check_loss_output(loss_fn: Loss, output: Tensor, target: Tensor, spec: str) -> None:
    """Call the loss on a model's output for a few samples; it must return a finite 0-dim tensor.

    Args:
        loss_fn: the resolved loss.
        output: [b, C] outputs of the model for b samples.
        target: [b] their labels.
        spec: the loss's name, for the message.

    Raises:
        LandscapeError: one line saying how the loss failed or what it returned.
    """
    try:
        value = loss_fn(output, target)
    except Exception as e:  # noqa: BLE001 - any failure of the loss on the model's output is bad input
        raise LandscapeError(f"--loss {spec} fails on the model's output {list(output.shape)} with labels "
                             f"{list(target.shape)}: {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(value, Tensor) or value.dim() != 0:
        shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise LandscapeError(f"--loss {spec} returns {shape}; it must return the batch mean, a 0-dim tensor")
