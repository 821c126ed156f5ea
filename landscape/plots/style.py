"""What every figure shares: the style, the colour-blind-safe palette (family by colour, variant by line
style), readable labels for metric and result keys, seed statistics for bands, and saving PNG + PDF.

Colours are Okabe & Ito's eight colour-blind-safe colours (Okabe & Ito 2008, "Color Universal Design");
when there are more lines than colours the line style changes too, so no two lines look alike.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from landscape import stats

PathLike = str | os.PathLike

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
MARKERS = ("o", "s", "^", "D", "v")

# readable labels of probe metrics and result keys (docs/methods.md §A.2, §B.3, §C.4)
LABELS = {
    "x_norm2": r"stream norm $\|x\|^2$",
    "f_par_norm2": r"parallel energy $\|f_\parallel\|^2$",
    "f_ortho_norm2": r"orthogonal energy $\|f_\perp\|^2$",
    "rho_par": r"$\|f_\parallel\|^2 / \|x\|^2$",
    "rho_ortho": r"$\|f_\perp\|^2 / \|x\|^2$",
    "cos_x_out": r"$\cos(x, f)$",
    "grad_ratio": r"$\|\partial L/\partial x_l\| \,/\, \|\partial L/\partial x_{l+1}\|$",
    "dead_frac": "dead units (fraction)",
    "overlap_act": "mean max activation overlap",
    "overlap_act_frac": "activation pairs with overlap > 0.95",
    "overlap_act_centered": "mean max centered activation overlap",
    "overlap_weight": "mean max weight overlap",
    "overlap_weight_frac": "weight pairs with overlap > 0.95",
    "eff_rank": "effective rank / width",
    "small_sv_frac": r"fraction of $s_k/s_1 < 10^{-3}$",
    "train_acc": "training accuracy",
    "test_acc": "test accuracy",
    "train_loss": "training loss",
    "test_loss": "test loss",
    "best_train_acc": "best training accuracy",
    "epoch_to_target": "first epoch at the target accuracy",
    "grad_gain": r"gradient gain $\|\partial L/\partial x_1\| / \|\partial L/\partial x_L\|$",
    "grad_dev_max": r"worst residual block $\max_l |\log_{10} r_l|$",
    "grad_dev_transition_max": r"transition blocks $\max |\log_{10} r_l|$",
    "transition_step": "transition step",
    "x_norm2_peak": r"peak $\|x\|^2$ (last block)",
    "x_norm2_last": r"final $\|x\|^2$ (last block)",
}
_SPECTRUM = {"degenerate_ratio": "degenerate mass", "negative_ratio": "negative mass", "lambda_max": r"$\lambda_{max}$",
             "lambda_min": r"$\lambda_{min}$", "trace": "Hessian trace",
             "bulk_degenerate_ratio": "degenerate mass relative to the bulk", "effective_rank": "effective rank"}


def label_of(key: str) -> str:
    """A readable axis label or title for a metric or result key ("init.KEY", "slq_KEY", "KEY_mean" too).

    Args:
        key: the key.

    Returns:
        The label.
    """
    if key.startswith("init."):
        return f"{label_of(key[5:])} at init"
    if key in LABELS:
        return LABELS[key]
    for prefix, what in (("slq_", "SLQ"), ("exact_", "exact")):
        if key.startswith(prefix) and key[len(prefix):] in _SPECTRUM:
            return f"{_SPECTRUM[key[len(prefix):]]} ({what})"
    if key in _SPECTRUM:
        return _SPECTRUM[key]
    if key.endswith("_mean") and key[:-5] in LABELS:
        return f"{LABELS[key[:-5]]}, block mean"
    return key.replace("_", " ")


def family_styles(members: Mapping[str, tuple[str, str]]) -> dict[str, dict]:
    """label → {"color", "ls"[, "marker", ...]} from label → (family, variant): one colour per family and one
    line style per variant, each in order of first appearance (the same variant looks the same in every
    family); variants after the first also get hollow markers.

    Args:
        members: label → (family, variant).

    Returns:
        The styles.
    """
    families = list(dict.fromkeys(f for f, _ in members.values()))
    variants = list(dict.fromkeys(v for _, v in members.values()))
    out = {}
    for lab, (f, v) in members.items():
        i = variants.index(v)
        out[lab] = {"color": OKABE_ITO[families.index(f) % len(OKABE_ITO)], "ls": LINE_STYLES[i % len(LINE_STYLES)]}
        if i:  # hollow markers too, so a variant stays visible where it lies on top of its family's first line
            out[lab].update(marker=MARKERS[(i - 1) % len(MARKERS)], markevery=0.1, ms=5, mfc="none")
    return out


def line_styles(labels: Iterable[str], styles: Mapping[str, Mapping] | None = None,
                colors: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """label → {"color", "ls"}: `styles` where given, else Okabe-Ito colours in order, the line style changing
    each time the colours run out; `colors` overrides the colour alone.

    Args:
        labels: the labels, in order.
        styles: label → style dict.
        colors: label → colour.

    Returns:
        The styles.
    """
    out = {}
    for i, lab in enumerate(labels):
        style = dict((styles or {}).get(lab, {}))
        style.setdefault("color", OKABE_ITO[i % len(OKABE_ITO)])
        style.setdefault("ls", LINE_STYLES[(i // len(OKABE_ITO)) % len(LINE_STYLES)])
        if colors and lab in colors:
            style["color"] = colors[lab]
        out[lab] = style
    return out


def save_figure(fig: Figure, path: PathLike, dpi: int = 120) -> list[Path]:
    """Write `fig` as PATH.png (`dpi`, quantized to a 256-color palette: 3-4x smaller, no visible change for
    line plots) and PATH.pdf (the suffix of `path`, if any, is replaced).

    Args:
        fig: the figure.
        path: the base path.
        dpi: the PNG's resolution.

    Returns:
        The two files written.
    """
    from PIL import Image

    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".png", ".pdf") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    out = [base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    image = Image.open(buf).convert("RGB").quantize(256, dither=Image.Dither.NONE)
    image.save(out[0], optimize=True)
    fig.savefig(out[1], bbox_inches="tight")
    return out


def styled(fn):
    """Draw inside seaborn's whitegrid style with the Okabe-Ito colour cycle (rcParams restored afterwards).

    Args:
        fn: a plotting function.

    Returns:
        The wrapped function.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib as mpl
        import seaborn as sns
        from cycler import cycler

        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8), \
                mpl.rc_context({"axes.prop_cycle": cycler(color=OKABE_ITO), "legend.frameon": False}):
            return fn(*args, **kwargs)

    return wrapper


def finish(fig: Figure, path: PathLike | None, title: str | None) -> Figure:
    """Give the figure its title and save it when a path is given.

    Args:
        fig: the figure.
        path: where to save (None: not saved).
        title: the title (None: none).

    Returns:
        The figure.
    """
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def plain_log_ticks(axis) -> None:
    """Log axis of ratios near 1: ticks at 1, 2, 5 × 10^k labelled as plain numbers (0.5, 1, 2), no minor labels.

    Args:
        axis: a matplotlib axis (ax.yaxis).
    """
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0), numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def ramp(n: int, cmap: str = "viridis", stop: float = 0.85) -> list:
    """n colours from dark (early, shallow) to light (late, deep) of a perceptually uniform map, stopping at
    `stop` of the map so the lightest line keeps its contrast on white (the maps end in pale yellow).

    Args:
        n: colours.
        cmap: the colormap.
        stop: the fraction of the map used.

    Returns:
        The colours.
    """
    return [colormaps[cmap](stop * i / max(n - 1, 1)) for i in range(n)]


def grid(n: int, ncols: int, width: float, height: float, **kw) -> tuple[Figure, list]:
    """A figure with n panels in rows of `ncols` (the unused panels of the last row hidden).

    Args:
        n: panels.
        ncols: panels per row.
        width: inches per panel.
        height: inches per panel.
        **kw: passed to `Figure.subplots` (sharex, sharey).

    Returns:
        (figure, the n axes).
    """
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def mean_sd(value) -> tuple[float, float, int]:
    """A number, or per-seed values (None / non-finite dropped) → (mean, sample SD or 0 for one value, n);
    NaN mean when none is finite (`landscape.stats`' convention).

    Args:
        value: a number or a sequence of per-seed values.

    Returns:
        (mean, SD, n).
    """
    values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    mean, sd, n = stats.mean_sd(values)
    return mean, (sd if n > 1 else 0.0), n


def is_seeds(value) -> bool:
    """True for a list of per-seed lists (records or metrics rows), False for one run's list.

    Args:
        value: a list.

    Returns:
        Whether it holds one list per seed.
    """
    return bool(value) and not isinstance(value[0], Mapping)


def with_n(label: str, n: int) -> str:
    """A legend label with its seed count: "label (n=5)".

    Args:
        label: the label.
        n: the count.

    Returns:
        The text.
    """
    return f"{label} (n={n})"


def seed_stack(runs: Sequence[Sequence[Mapping]], key: str, x: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
    """(x values, values[seeds, x]) with NaN where a seed has no record (e.g. it diverged earlier).

    Args:
        runs: one list of rows per seed.
        key: the value's key.
        x: the x key.

    Returns:
        (x values, values [seeds, x]).
    """
    xs = sorted({r[x] for rec in runs for r in rec if r.get(x) is not None})
    pos = {e: i for i, e in enumerate(xs)}
    vals = np.full((len(runs), len(xs)), np.nan)
    for s, rec in enumerate(runs):
        for r in rec:
            if r.get(key) is not None and r.get(x) is not None:
                vals[s, pos[r[x]]] = r[key]
    return np.array(xs, dtype=float), vals
