"""The design of Li et al. 2018's depth series (`landscape.experiment.li2018`): its cells (family × variant ×
depth), their nets and training (`LiConfig`, `model_spec`, `train_config`), the surface and map axes, and the
per-run statistics (`KEYS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from landscape.train import TrainConfig

DEPTHS = (20, 56, 110)
FAMILIES = ("resnet", "fc")
VARIANTS = ("short", "noshort")
_HALF = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
AXIS = tuple(sorted({0.0, *_HALF, *(-c for c in _HALF)}))
MAP_AXIS = (-0.5, 0.0, 0.5)
RATIO_FLOOR = 1e-3
RADII = (0.1, 0.25)
CONFIG_KEYS = ("model", "model_config", "n_samples", "epochs", "batch_size", "optimizer", "lr", "momentum",
               "weight_decay", "schedule", "warmup_epochs", "loss", "seed")
KEYS = ("nonconvexity", "nonconvexity_max", "origin_ratio", "origin_lambda_max", "unconverged",
        "surface_nonconvexity", "loss_at_minimum", "rise_r0.1", "rise_r0.25")


@dataclass(frozen=True)
class LiConfig:
    """The grid: which nets, how they train, how they are measured.

    Attributes:
        seeds: initialization (and shuffle, direction) seeds.
        depths, families: the cells (each with both variants).
        epochs, batch_size, lr, momentum, weight_decay, warmup_epochs: SGD with a cosine schedule.
        n_train: MNIST-1D training samples.
        resnet_width, fc_width: widths of the two families.
        measure_samples: the measurement set (the first N training samples), on which surfaces are evaluated.
        hessian_samples: the Hessian map uses the first N samples of the measurement set.
        tol, max_matmats: the eigensolver's relative residual and its product budget per solve. The solver's
            tolerance is relative to the largest |Ritz value| of its basis (≈ λmax for both solves), so it
            must lie well below the ratios to resolve: at 10⁻² the λmin solve stops after two products on a
            near-null vector (λmin ≈ 0.004 where a 150-product solve and plain Lanczos find −6.3); at 10⁻⁴
            it agrees with them to 4 digits in 12-19 products.
        threads: torch threads per run.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    depths: tuple[int, ...] = DEPTHS
    families: tuple[str, ...] = FAMILIES
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    n_train: int = 4000
    resnet_width: int = 8
    fc_width: int = 64
    measure_samples: int = 128
    hessian_samples: int = 64
    tol: float = 1e-4
    max_matmats: int = 40
    threads: int = 1
    axis: tuple[float, ...] = field(default=AXIS)
    map_axis: tuple[float, ...] = field(default=MAP_AXIS)


QUICK = LiConfig()
"""The quick profile (the committed grid's settings)."""
# the paper-sized profile (NOT RUN: docs/methods.md §F.6 states its GPU-hours): Li et al.'s width, 5x the epochs,
# surfaces and maps on 10x / 16x the samples, a tenfold tighter eigensolver
FULL = LiConfig(epochs=50, resnet_width=16, measure_samples=1280, hessian_samples=1024, tol=1e-5, max_matmats=100)


def cell_name(family: str, variant: str, depth: int) -> str:
    """"resnet_noshort_56" and the like.

    Args:
        family, variant, depth: the cell.

    Returns:
        FAMILY_VARIANT_DEPTH.
    """
    return f"{family}_{variant}_{depth}"


def cells(cfg: LiConfig) -> list[tuple[str, str, int]]:
    """(family, variant, depth) of every cell, cheapest first.

    Args:
        cfg: the grid (its depths and families).

    Returns:
        The cells, both variants of each.
    """
    return [(f, v, d) for d in sorted(cfg.depths) for f in cfg.families for v in VARIANTS]


def model_spec(family: str, variant: str, depth: int, cfg: LiConfig) -> tuple[str, dict]:
    """(zoo name, model config) of a cell (`landscape.experiment.li2018`'s docstring, "Nets").

    Args:
        family: "resnet" or "fc"; variant: "short" or "noshort"; depth: layers (6n + 2 for ResNets).
        cfg: the widths.

    Returns:
        (name, config) for `landscape.models.build`.
    """
    if family == "resnet":
        if (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n + 2, got {depth}")
        return "resnet1d", {"n_blocks": (depth - 2) // 6, "width": cfg.resnet_width,
                            "connect": "identity" if variant == "short" else "none"}
    return "fc", {"kind": "residual" if variant == "short" else "plain", "block": "preact", "norm": "none",
                  "init": "he", "depth": depth, "width": cfg.fc_width,
                  "branch_scale": "inv_sqrt_depth" if variant == "short" else 1.0}


def train_config(family: str, variant: str, depth: int, seed: int, cfg: LiConfig, out: Path) -> TrainConfig:
    """The `landscape.train` configuration of one run (checkpoint in `out`, resumable).

    Args:
        family, variant, depth: the cell; seed: the run's seed; cfg: the grid; out: the run directory.

    Returns:
        The run's `TrainConfig` (cosine schedule with warm-up, CPU, resumable).
    """
    model, model_config = model_spec(family, variant, depth, cfg)
    return TrainConfig(model=model, model_config=model_config, n_samples=cfg.n_train, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, optimizer="sgd", lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, schedule="cosine", warmup_epochs=cfg.warmup_epochs,
                       seed=seed, device="cpu", threads=cfg.threads, out=str(out), resume=True, progress=False)
