"""The declared claims of Li et al. 2018's depth series (§5 Fig. 5 and §6 Fig. 7), judged as one Holm family on
the primary metric, the per-run non-convexity, paired by seed on the log scale (`judge_li`; docs/methods.md §F.6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from landscape.experiment.li2018_grid import FAMILIES, KEYS, VARIANTS, cell_name


def present_cells(runs: Mapping[str, Sequence[Mapping]]) -> list[tuple[str, str, int]]:
    """(family, variant, depth) of the cells that have records, in `cells` order (depth, family, variant).

    Args:
        runs: cell → records.

    Returns:
        The cells with records.
    """
    found = {(r[0]["family"], r[0]["variant"], r[0]["depth"]) for r in runs.values() if r}
    order = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(found, key=lambda c: (c[2], order.get(c[0], 9), VARIANTS.index(c[1])))


def per_seed(runs: Mapping[str, Sequence[Mapping]], cell: str, key: str) -> dict[int, float]:
    """{seed: value} of one key of a cell (from `keys` or `final`).

    Args:
        runs: cell → records; cell: the cell; key: a key of `KEYS` or of `final`.

    Returns:
        {seed: value}, NaN where the run has none.
    """
    return {r["seed"]: _value(r, key) for r in runs.get(cell, ())}


PRIMARY = "nonconvexity"
GAP = "{family}_noshort_over_short_{depth}"     # a derived cell: per seed, noshort / short of the primary metric
CLAIMS = {
    "noshort_56": {"text": "ResNet-56 without shortcuts is less convex than with them",
                   "cells": ["resnet_noshort_56", "resnet_short_56"]},
    "noshort_110": {"text": "ResNet-110 without shortcuts is less convex than with them",
                    "cells": ["resnet_noshort_110", "resnet_short_110"]},
    "noshort_depth": {"text": "without shortcuts, depth makes the landscape less convex (110 vs 20 layers)",
                      "cells": ["resnet_noshort_110", "resnet_noshort_20"]},
    "shortcut_effect_grows": {"text": "the shortcuts' effect on convexity grows with depth: noshort/short is larger "
                                      "at 110 layers than at 20",
                              "cells": [GAP.format(family="resnet", depth=110), GAP.format(family="resnet", depth=20)]},
    "fc_plain_56": {"text": "stream-controlled FC, depth 56: plain less convex than residual",
                    "cells": ["fc_noshort_56", "fc_short_56"]},
    "fc_plain_110": {"text": "stream-controlled FC, depth 110: plain less convex than residual",
                     "cells": ["fc_noshort_110", "fc_short_110"]},
}
DECLARED = "bf1e283"                          # the commit that declared CLAIMS and PRIMARY (git log -S)
FIRST_RUN = "2026-12-07 11:49 UTC"            # the grid's first run (its settings: commit 56fa5e4)


def summary_of(runs: Mapping[str, Sequence[Mapping]]) -> dict:
    """The records as `landscape.experiment.summary`'s shape ({"cells": [{"cell", "seeds", "final": {key:
    {"values"}}, "init": {}}]}) for `verdicts.claim_test`, with the derived noshort/short cells of `GAP`.

    Args:
        runs: cell → records.

    Returns:
        The summary-shaped dict.
    """
    cells = []
    for cell, recs in runs.items():
        keys = sorted(set(KEYS) | {"train_loss", "train_acc", "test_loss", "test_acc"})
        cells.append({"cell": cell, "seeds": [r["seed"] for r in recs], "init": {},
                      "final": {k: {"values": [_value(r, k) for r in recs]} for k in keys}})
    for family, depth in sorted({(f, d) for f, _, d in present_cells(runs)}):
        a, b = (per_seed(runs, cell_name(family, v, depth), PRIMARY) for v in ("noshort", "short"))
        seeds = sorted(set(a) & set(b))
        cells.append({"cell": GAP.format(family=family, depth=depth), "seeds": seeds, "init": {},
                      "final": {PRIMARY: {"values": [a[s] / b[s] for s in seeds]}}})
    return {"cells": cells}


def judged(runs: Mapping[str, Sequence[Mapping]], claims: Mapping[str, Mapping] = CLAIMS) -> list[dict]:
    """Each declared claim's test before Holm, in `landscape.experiment.verdicts`' row shape: the primary metric
    as the ratio A/B paired by seed on the log scale (`verdicts.claim_test`); all claims were declared before
    their data (confirmatory, quick seeds).

    Args:
        runs: cell → records; claims: name → {"text", "cells": [A, B]}.

    Returns:
        One row per claim (`verdicts.judge_claim`'s keys).
    """
    from landscape.experiment.verdicts import claim_test

    summary = summary_of(runs)
    rows = []
    for name, claim in claims.items():
        c = {"cells": list(claim["cells"]), "metric": PRIMARY, "direction": "greater", "scale": "log"}
        rows.append({"paper": "li2018", "grid": "li2018_depth", "name": name, "text": claim["text"],
                     "cells": c["cells"], "direction": "greater", "metric": PRIMARY, "secondary": [],
                     "declared": DECLARED, "first_run": FIRST_RUN, "order": "before", "status": "confirmatory",
                     "profile": "quick", "test": claim_test(summary, c), "exploratory": None, "published": None,
                     "effect": None, "previous": None})
    return rows


def judge_li(runs: Mapping[str, Sequence[Mapping]], claims: Mapping[str, Mapping] = CLAIMS) -> list[dict]:
    """`judged` with Holm's adjustment over the family and the adjusted verdicts (`verdicts.holm_family`).

    Args:
        runs: cell → records; claims: as in `judged`.

    Returns:
        The rows with p_holm, m and the adjusted verdict.
    """
    from landscape.experiment.verdicts import holm_family

    return holm_family(judged(runs, claims))


def _value(rec: Mapping, key: str) -> float:
    v = rec["keys"].get(key, rec["final"].get(key))
    return math.nan if v is None else float(v)
