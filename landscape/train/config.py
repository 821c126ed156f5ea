"""Training configuration: the `TrainConfig` fields, their validation, TOML loading and model-size defaults.

Every option of `python -m landscape.train` is a `TrainConfig` field; TOML files use the field names
and the CLI the same names with dashes. `validate` turns any bad value into a one-line
`LandscapeError`, so a run fails before it loads data or writes a file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field

from landscape.data import DATASETS, TensorData
from landscape.errors import LandscapeError
from landscape.train.losses import resolve_loss

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
# config keys a model takes from the data when the user leaves them out
_DATA_KEYS = {"fc": ("in_dim", "n_classes"), "resnetv2": ("in_channels", "n_classes"),
              "resnet_zaeemzadeh": ("in_channels", "n_classes"),
              "procresnet": ("in_channels", "n_classes", "img_size"),
              "vit": ("in_channels", "n_classes", "img_size")}
# keys that may change when a run is resumed; everything else must match the checkpoint
RESUMABLE_CHANGES = frozenset({"epochs", "resume", "out", "device", "progress", "probes", "probe_every",
                               "measure_samples", "download", "data_root", "eval_batch_size", "threads",
                               "keep_epochs", "tensorboard", "fsdp"})


@dataclass
class TrainConfig:
    """Everything a run depends on. TOML files and CLI flags use these names (flags with dashes)."""

    model: str = "fc"
    model_config: dict = field(default_factory=dict)
    data: str = "mnist1d"
    data_root: str | None = None
    n_samples: int | None = None
    data_seed: int = 0
    download: bool = False
    augment: bool = False
    epochs: int = 30
    batch_size: int = 128
    eval_batch_size: int = 1024
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    clip_grad: float | None = None
    label_smoothing: float = 0.0
    loss: str = "ce"
    bias_reg: float = 0.0
    bias_target: float = 0.0
    bias_targets: str = "branch"
    procrustes_p: float = 0.0
    device: str = "auto"
    bf16: bool = False
    fsdp: bool = False
    threads: int | None = None
    seed: int = 0
    out: str | None = None
    resume: bool = False
    keep_epochs: bool = False
    probes: list[str] = field(default_factory=list)
    probe_every: int = 100
    measure_samples: int | None = None
    tensorboard: str | None = None
    progress: bool | None = None

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build and validate from plain data; unknown keys are a `LandscapeError` naming them.

        Args:
            d: {option: value}.

        Returns:
            The validated config.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise LandscapeError(f"unknown training option(s) {unknown}; known: {', '.join(names)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        """The options as a plain dict (config.json)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check every option's type and range.

        Raises:
            LandscapeError: naming the first bad option.
        """
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise LandscapeError(what)

        def is_int(val) -> bool:
            return isinstance(val, int) and not isinstance(val, bool)

        for key in ("lr", "momentum", "weight_decay", "warmup_epochs", "gamma", "label_smoothing", "bias_reg",
                    "bias_target", "procrustes_p"):
            val = getattr(self, key)
            need(isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val),
                 f"{key} must be a finite number, got {val!r}")
            setattr(self, key, float(val))
        for key in ("epochs", "batch_size", "eval_batch_size", "seed", "data_seed", "probe_every"):
            val = getattr(self, key)
            need(is_int(val), f"{key} must be an integer, got {val!r}")
        for key in ("model", "data", "device", "bias_targets", "loss"):
            val = getattr(self, key)
            need(isinstance(val, str), f"{key} must be a string, got {val!r}")
        for key in ("data_root", "out", "tensorboard"):
            val = getattr(self, key)
            need(val is None or (isinstance(val, str) and val != ""), f"{key} must be a path, got {val!r}")
        for key in ("download", "augment", "bf16", "fsdp", "resume", "keep_epochs"):
            val = getattr(self, key)
            need(isinstance(val, bool), f"{key} must be true or false, got {val!r}")
        need(self.progress is None or isinstance(self.progress, bool),
             f"progress must be true, false or unset, got {self.progress!r}")
        need(isinstance(self.model_config, dict), f"model_config must be a table, got {self.model_config!r}")
        need(self.data in DATASETS, f"unknown data set {self.data!r}; known: {', '.join(DATASETS)}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        need(self.epochs >= 1 and self.batch_size >= 1 and self.eval_batch_size >= 1,
             "epochs, batch_size and eval_batch_size must be positive")
        need(0 <= self.seed < 2**63, f"seed must lie in [0, 2**63), got {self.seed}")
        need(0 <= self.data_seed < 2**32, f"data_seed must lie in [0, 2**32), got {self.data_seed}")
        need(self.lr > 0, f"lr must be positive and finite, got {self.lr}")
        need(self.momentum >= 0, f"momentum must be ≥ 0, got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}")
        need(self.gamma > 0, f"gamma must be positive, got {self.gamma}")
        need(self.warmup_epochs >= 0, f"warmup_epochs must be ≥ 0, got {self.warmup_epochs}")
        need(isinstance(self.milestones, list) and all(is_int(m) and m > 0 for m in self.milestones),
             f"milestones must be a list of positive epoch numbers, got {self.milestones!r}")
        need(self.clip_grad is None or (isinstance(self.clip_grad, (int, float)) and not isinstance(
            self.clip_grad, bool) and 0 < self.clip_grad < math.inf),
             f"clip_grad must be positive and finite (or unset), got {self.clip_grad!r}")
        need(0.0 <= self.label_smoothing < 1.0,
             f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        resolve_loss(self.loss, self.label_smoothing)                # a bad --loss fails here, in one line
        need(self.bias_reg >= 0, f"bias_reg must be ≥ 0, got {self.bias_reg}")
        need(0.0 <= self.procrustes_p <= 1.0, f"procrustes_p must lie in [0, 1], got {self.procrustes_p}")
        need(self.probe_every >= 1, f"probe_every must be ≥ 1, got {self.probe_every}")
        need(isinstance(self.probes, list) and all(isinstance(p, str) for p in self.probes),
             f"probes must be a list of names, got {self.probes!r}")
        for key in ("threads", "n_samples", "measure_samples"):
            val = getattr(self, key)
            need(val is None or (is_int(val) and val > 0), f"{key} must be a positive integer, got {val!r}")


def resolved_model_config(cfg: TrainConfig, data: TensorData) -> dict:
    """`cfg.model_config` with the data-given sizes filled in and the run's seed as default init seed.

    Args:
        cfg: the run's config.
        data: its training data.

    Returns:
        The model config.
    """
    derived = {"n_classes": data.n_classes, "in_dim": math.prod(data.X.shape[1:]),
               "in_channels": data.X.shape[1] if data.X.dim() == 4 else 1, "img_size": data.X.shape[-1]}
    out = dict(cfg.model_config)
    for key in _DATA_KEYS.get(cfg.model, ("n_classes",)):
        out.setdefault(key, derived[key])
    out.setdefault("seed", cfg.seed)
    return out


def load_toml(path: str | os.PathLike) -> dict:
    """A TOML file of `TrainConfig` keys (a `[model_config]` table for the model).

    Args:
        path: the TOML file.

    Returns:
        The options dict.
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise LandscapeError("reading TOML configs needs Python >= 3.11 or `pip install tomli`") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise LandscapeError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise LandscapeError(f"config file {path}: invalid TOML ({e})") from None
