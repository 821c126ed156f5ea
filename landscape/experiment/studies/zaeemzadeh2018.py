"""Zaeemzadeh et al. 2018/2020 (docs/methods.md §C): norm preservation — the grids, tables and figures."""

from __future__ import annotations

from landscape import plots
from landscape.experiment.registry import GridSpec
from landscape.experiment.tables import cells_of, paper_tables

GRIDS = [GridSpec("zaeemzadeh2018_transitions"), GridSpec("zaeemzadeh2018_transitions", "confirm"),
         GridSpec("zaeemzadeh2018"), GridSpec("zaeemzadeh2018", "confirm")]
NORM = ["grad_absdev_mean", "grad_dev_max", "n_failed_blocks", "grad_dev_transition_max", "init.grad_absdev_mean",
        "init.grad_dev_transition_max", "grad_gain", "train_acc", "test_acc"]


def _depth(grid, cell) -> int:
    return grid.setting(cell, "model_config.depth")


def grad_ratio(store, path):
    """r_l per block of the FC nets at init, a quarter through and at the end (geometric mean over seeds).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("zaeemzadeh2018")
    order = sorted(g.cells(), key=lambda c: (g.cell_runs(c)[0]["config"]["base"] != "plain", _depth(g, c)))
    runs = {f"{g.cell_runs(c)[0]['config']['base']}, depth {_depth(g, c)}": g.epoch_records(c) for c in order}
    epochs = sorted({r["epoch"] for r in next(iter(runs.values()))[0]})
    at = sorted({epochs[0], epochs[len(epochs) // 4], epochs[-1]})
    marks = {name: g.transitions(c) for name, c in zip(runs, order)}
    return plots.plot_grad_ratio_grid(runs, at=at, key="epoch", ncols=4, path=path, transitions=marks,
                                      title="FC nets: gradient-norm ratio per block (1 = norm preserved; "
                                            "square: the 40 → width input block, a transition)")


def _by_depth(g, key: str) -> dict:
    return {fam: {_depth(g, c): [r["final" if not key.startswith("init.") else "init"].get(key.removeprefix("init."))
                                 for r in _results(g, c)] for c in g.cells(fam)} for fam in ("plain", "residual")}


def _results(g, cell) -> list[dict]:
    return [r for r in g.results() if r["cell"] == cell]


def depth_deviation(store, path):
    """Mean (the primary metric) and max |log10 r_l| over residual blocks against depth, at init and trained.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("zaeemzadeh2018")
    panels = {}
    for when, pre in (("at initialization", "init."), ("after training", "")):
        panels[when] = {f"{fam}, {stat}": vals for stat, key in (("mean", "grad_absdev_mean"), ("max", "grad_dev_max"))
                        for fam, vals in _by_depth(g, pre + key).items()}
    styles = plots.family_styles({f"{fam}, {stat}": (fam, stat) for fam in ("plain", "residual")
                                  for stat in ("mean", "max")})
    return plots.plot_sweep(panels, path, ylabel=r"$|\log_{10} r_l|$ over residual blocks", xlabel="depth (blocks)",
                            logx=True, logy=True, styles=styles,
                            title="deviation from norm preservation: mean over blocks (primary, solid) and max "
                                  "(dashed); colour: family; a non-finite r_l counts as 38 decades (a failure)")


def depth_gain(store, path):
    """The end-to-end gradient gain against depth, at initialization and after training.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("zaeemzadeh2018")
    return plots.plot_sweep({"at initialization": _by_depth(g, "init.grad_gain"),
                             "after training": _by_depth(g, "grad_gain")}, path,
                            ylabel=plots.label_of("grad_gain"), xlabel="depth (blocks)", logx=True, logy=True,
                            hline=1.0, title="end-to-end gradient gain")


def training(store, path):
    """Training curves of the plain and residual FC nets of every depth (colour: family, line style: depth).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("zaeemzadeh2018")
    order = sorted(g.cells(), key=lambda c: (g.cell_runs(c)[0]["config"]["base"] != "plain", _depth(g, c)))
    names = {c: f"{g.cell_runs(c)[0]['config']['base']}, depth {_depth(g, c)}" for c in order}
    styles = plots.family_styles({names[c]: (g.cell_runs(c)[0]["config"]["base"], str(_depth(g, c))) for c in order})
    return plots.plot_training_curves({names[c]: g.histories(c) for c in order}, path, styles=styles,
                                      title="FC nets, plain vs residual (colour: family, line style: depth)")


def transitions_grad_ratio(store, path):
    """The gradient-norm ratio per block of the transitions grid at init, halfway and at the end.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("zaeemzadeh2018_transitions")
    runs = {c: g.epoch_records(c) for c in g.cells()}  # cell names: the labels are too long for panel titles
    epochs = sorted({r["epoch"] for r in next(iter(runs.values()))[0]})
    return plots.plot_grad_ratio_grid(runs, at=sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]}),
                                      key="epoch", ncols=3, path=path,
                                      transitions={c: g.transitions(c) for c in runs},
                                      title="1-D conv nets: gradient-norm ratio per block (squares: transitions)")


TABLES = {**paper_tables("zaeemzadeh2018"),
          "zaeemzadeh2018_transitions_cells": cells_of("zaeemzadeh2018_transitions", NORM),
          "zaeemzadeh2018_cells": cells_of("zaeemzadeh2018", NORM + ["init.grad_gain"])}
FIGURES = {"zaeemzadeh2018_grad_ratio": grad_ratio, "zaeemzadeh2018_depth_deviation": depth_deviation,
           "zaeemzadeh2018_depth_gain": depth_gain, "zaeemzadeh2018_training": training,
           "zaeemzadeh2018_transitions_grad_ratio": transitions_grad_ratio}
