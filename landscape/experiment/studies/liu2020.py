"""Liu et al. 2020 (docs/methods.md §D): xSkip, LN and rSkip — the grids, tables and figures."""

from __future__ import annotations

import numpy as np

from landscape import plots, stats
from landscape.experiment.registry import GridSpec
from landscape.experiment.summary import fmt
from landscape.experiment.tables import cells_of, paper_tables
from landscape.plots.style import ramp

GRIDS = [GridSpec("liu2020_transformer"), GridSpec("liu2020"), GridSpec("liu2020", "confirm")]
HEAD = ["train_loss", "train_acc", "test_acc", "grad_ratio_min", "grad_ratio_max", "grad_gain", "x_norm2_last",
        "init.grad_gain"]
# skip-path connections per block: two in the transformer (attention and MLP), one in the FC net
CONNECTIONS = {"liu2020_transformer": 2, "liu2020": 1}


def _lambda(g, cell) -> float:
    return float(str(g.cell_runs(cell)[0]["config"]["setting"]["model_config.connect"]).rpartition(":")[2])


def gain_table(store) -> str:
    """xSkip's end-to-end gradient gain at init and its factor per connection, gain^(1/L), as a geometric mean
    over seeds with its log-scale 95% interval, against λ^L and λ.

    Args:
        store: the records and experiments.

    Returns:
        The markdown table.
    """
    lines = ["| grid | cell | λ | L | gain at init, geometric mean [95% CI] | λ^L | factor per connection [95% CI] "
             "| n |", "|---|---|---|---|---|---|---|---|"]
    for grid, per in CONNECTIONS.items():
        g = store.grid(grid)
        for cell in g.cells("xskip"):
            res = [r for r in g.results() if r["cell"] == cell]
            gains = [r["init"].get("grad_gain") for r in res]
            blocks = [r["init"].get("n_residual_blocks") if grid == "liu2020" else r["init"].get("n_blocks")
                      for r in res]
            L = per * blocks[0] if grid == "liu2020_transformer" else blocks[0]
            lam = _lambda(g, cell)
            gi = stats.log_ci(gains)
            fi = stats.log_ci([x ** (1 / L) for x in gains])
            lines.append(f"| {grid} | {cell} | {lam:g} | {L} | {fmt(gi.estimate)} [{fmt(gi.low)}, {fmt(gi.high)}] | "
                         f"{fmt(lam ** L)} | {fmt(fi.estimate)} [{fmt(fi.low)}, {fmt(fi.high)}] | {fi.n} |")
    return "\n".join(lines)


def _family(g, base, key):
    part, k = ("init", key[5:]) if key.startswith("init.") else ("final", key)
    return {g.setting(c): [r[part].get(k) for r in g.results() if r["cell"] == c] for c in g.cells(base)}


def _panels(g, key):
    return {"xSkip: λx + F(x)": {"xSkip": _family(g, "xskip", key), "xSkip+LN": _family(g, "xskip_ln", key)},
            "rSkip+LN": {"rSkip+LN": _family(g, "rskip_ln", key)}}


def lambda_loss(store, path):
    """The final training loss against λ (xSkip) and K (recursion steps).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    return plots.plot_sweep(_panels(store.grid("liu2020"), "train_loss"), path, ylabel="final training loss",
                            xlabel=["λ", "K (recursion steps)"], logy=True, title="FC nets: final training loss")


def lambda_test_acc(store, path):
    """The final test accuracy against λ (xSkip) and K (recursion steps).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    return plots.plot_sweep(_panels(store.grid("liu2020"), "test_acc"), path, ylabel="final test accuracy",
                            xlabel=["λ", "K (recursion steps)"], title="FC nets: final test accuracy")


def lambda_grad_gain(store, path):
    """The end-to-end gradient gain ‖∂L/∂x₁‖ / ‖∂L/∂x_L‖ at init against λ, with λ^L for comparison.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("liu2020")
    L = next(r["init"]["n_residual_blocks"] for r in g.results() if r["cell"].startswith("xskip_"))
    lams = np.array(sorted(_family(g, "xskip", "init.grad_gain")))
    return plots.plot_sweep(_panels(g, "init.grad_gain"), path,
                            ylabel=r"$\|\partial L/\partial x_1\| / \|\partial L/\partial x_L\|$ at init",
                            xlabel=["λ", "K (recursion steps)"], logy=True, hline=1.0,
                            reference={"xSkip: λx + F(x)": (lams, lams ** L)},
                            title=f"end-to-end gradient gain at initialization (dashed: λ^L, L = {L})")


NAMES = {"xskip": "xSkip λ={:g}", "xskip_ln": "xSkip+LN λ={:g}", "rskip_ln": "rSkip+LN K={:g}"}


def _short(g, cell):
    return NAMES[g.cell_runs(cell)[0]["config"]["base"]].format(g.setting(cell))


def training_xskip(store, path):
    """Training curves of the xSkip cells, one colour per λ.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("liu2020")
    cells = g.cells("xskip")
    styles = dict(zip([_short(g, c) for c in cells],
                      ({"color": c, "ls": "-"} for c in ramp(len(cells)))))
    return plots.plot_training_curves({_short(g, c): g.histories(c) for c in cells}, path, styles=styles,
                                      title="xSkip without normalization (one colour scale: λ)")


def training_ln(store, path):
    """Training curves of xSkip and rSkip with LayerNorm (colour: skip, line style: λ or K).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("liu2020")
    cells = g.cells("xskip_ln") + g.cells("rskip_ln")
    styles = plots.family_styles({_short(g, c): (g.cell_runs(c)[0]["config"]["base"], str(g.setting(c)))
                                  for c in cells})
    return plots.plot_training_curves({_short(g, c): g.histories(c) for c in cells}, path, styles=styles,
                                      title="with LayerNorm (colour: family, line style: λ or K)")


def grad_ratio(store, path):
    """The gradient-norm ratio per connection at the first and last measured epoch, for five cells.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("liu2020")
    show = [c for c in ("xskip_0.5", "xskip_1", "xskip_3", "xskip_ln_3", "rskip_ln_3") if c in g.cells()]
    runs = {_short(g, c): g.epoch_records(c) for c in show}
    epochs = sorted({r["epoch"] for r in next(iter(runs.values()))[0]})
    return plots.plot_grad_ratio_grid(runs, at=[epochs[0], epochs[-1]], key="epoch", ncols=5, path=path,
                                      transitions={_short(g, c): g.transitions(c) for c in show},
                                      title="FC nets: gradient-norm ratio per block at init and at the end "
                                            "(square: the input transition)")


def transformer_training(store, path):
    """Training curves of the transformer grid (colour: skip and λ or K, line style: normalization).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("liu2020_transformer")

    def family(cell):  # the skip and its λ or K: colour; the normalization: line style
        connect = str(g.cell_runs(cell)[0]["config"]["train"]["model_config"]["connect"])
        mode, _, value = connect.partition(":")
        return f"{'rSkip K' if mode.startswith('recursive') else 'xSkip λ'} = {value}"

    styles = plots.family_styles({c: (family(c), "LN" if "_ln" in c else "BN" if "_bn" in c else "no norm")
                                  for c in g.cells()})
    return plots.plot_training_curves({c: g.histories(c) for c in g.cells()}, path, styles=styles,
                                      title="transformer stand-in (colour: skip and λ or K, line style: "
                                            "none / LN / BN)")


def transformer_grad_ratio(store, path):
    """The transformer's gradient-norm ratio per connection at init and at the end.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("liu2020_transformer")
    runs = {c: g.epoch_records(c) for c in g.cells()}
    epochs = sorted({r["epoch"] for r in next(iter(runs.values()))[0]})
    return plots.plot_grad_ratio_grid(runs, at=sorted({epochs[0], epochs[-1]}), key="epoch", ncols=5, path=path,
                                      title="transformer: gradient-norm ratio per connection at init and at the end")


TABLES = {**paper_tables("liu2020"), "liu2020_transformer_cells": cells_of("liu2020_transformer", HEAD),
          "liu2020_cells": cells_of("liu2020", HEAD), "liu2020_gain": gain_table}
FIGURES = {"liu2020_lambda_loss": lambda_loss, "liu2020_lambda_test_acc": lambda_test_acc,
           "liu2020_lambda_grad_gain": lambda_grad_gain, "liu2020_training_xskip": training_xskip,
           "liu2020_training_ln": training_ln, "liu2020_grad_ratio": grad_ratio,
           "liu2020_transformer_training": transformer_training,
           "liu2020_transformer_grad_ratio": transformer_grad_ratio}
