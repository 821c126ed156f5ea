"""Declared claims: the [claims.NAME] tables of an experiment TOML, validated and resolved per profile.

    [claims.NAME]              a claim judged on the grid (declared before the run; see
                               `landscape.experiment.claims`): text, metric (the primary result key,
                               "init.KEY" for init), cells = [A, B] (paired by seed: the difference A − B),
                               direction ("greater": the claim expects A > B; "less": A < B), secondary
                               (result keys reported beside it), profiles (default: every profile whose
                               cells include A and B; a listed profile without them is an error),
                               published = {a, b, source, setup, error}: the paper's values of the metric
                               for the two arms, where they come from (table, figure, "read from an
                               animation"), how the paper's setup differs, and the reading error ± of a value
                               read by eye;
                               provenance (docs/methods.md §H.5): declared (the commit that declared the
                               claim, found with `git log -S`), first_run (when the runs it is tested on were
                               first made), order ("before": declared before its data was seen; "after":
                               formed after, so it is confirmatory only on fresh seeds, a profile that
                               re-runs its cells), scale ("linear" or "log": a ratio A/B for gains and
                               ratios; default by the metric, `keys.scale_of`), previous = {verdict, metric,
                               seeds, source}: the verdict RESULTS.md gave before, the metric and seeds it
                               was judged on if they differ (for "Verdicts that changed")
"""

from __future__ import annotations

import copy

from landscape.errors import LandscapeError
from landscape.experiment.schema import INT_LIST, STR_LIST, check

_CLAIM = {"text": str, "metric": str, "cells": STR_LIST, "direction": str, "secondary": STR_LIST,
          "profiles": STR_LIST, "published": dict, "declared": str, "first_run": str, "order": str, "scale": str,
          "previous": dict}
_PUBLISHED = {"a": float, "b": float, "source": str, "setup": str, "error": float}
_PREVIOUS = {"verdict": str, "metric": str, "seeds": INT_LIST, "source": str}
_PROVENANCE = ("declared", "first_run", "order", "scale", "previous")


def resolve_claims(claims: dict, profile: str, cells: set[str], where: str) -> list[dict]:
    """The claims that apply to `profile` (those whose two cells it runs, or that list it), validated:
    [{"name", "text", "metric", "cells": [A, B], "direction", "secondary"}] in file order.

    Args:
        claims: the TOML's [claims] table.
        profile: the profile being resolved.
        cells: the profile's cell names.
        where: the file name, for messages.

    Returns:
        The claims, in file order.
    """
    from landscape.experiment.keys import check_key

    out = []
    for name, claim in claims.items():
        w = f"{where}: claims.{name}"
        check(claim, _CLAIM, w, required=("text", "metric", "cells", "direction"))
        if len(claim["cells"]) != 2 or claim["cells"][0] == claim["cells"][1]:
            raise LandscapeError(f"{w}.cells must name two different cells [A, B] (the difference A - B), "
                                 f"got {claim['cells']}")
        if claim["direction"] not in ("greater", "less"):
            raise LandscapeError(f"{w}.direction must be 'greater' (A > B) or 'less' (A < B), "
                                 f"got {claim['direction']!r}")
        for key in [claim["metric"], *claim.get("secondary", [])]:
            problem = check_key(key)
            if problem:
                raise LandscapeError(f"{w}: {problem}")
        if "published" in claim:
            check(claim["published"], _PUBLISHED, f"{w}.published", required=("a", "b", "source", "setup"))
        if claim.get("order", "before") not in ("before", "after"):
            raise LandscapeError(f"{w}.order must be 'before' or 'after' (declared before / after its data was "
                                 f"seen), got {claim['order']!r}")
        if claim.get("scale", "linear") not in ("linear", "log"):
            raise LandscapeError(f"{w}.scale must be 'linear' or 'log', got {claim['scale']!r}")
        if "previous" in claim:
            check(claim["previous"], _PREVIOUS, f"{w}.previous", required=("verdict", "source"))
            if claim["previous"]["verdict"] not in ("agrees", "disagrees", "inconclusive"):
                raise LandscapeError(f"{w}.previous.verdict must be agrees, disagrees or inconclusive")
        listed = claim.get("profiles")
        missing = [c for c in claim["cells"] if c not in cells]
        if listed is not None and profile not in listed:
            continue
        if missing:
            if listed is None:
                continue  # a claim about cells of another profile
            raise LandscapeError(f"{w}: profile {profile!r} has no cell(s) {missing}; "
                                 f"cells: {', '.join(sorted(cells))}")
        out.append({"name": name, "text": claim["text"], "metric": claim["metric"], "cells": list(claim["cells"]),
                    "direction": claim["direction"], "secondary": list(claim.get("secondary", [])),
                    **({"published": dict(claim["published"])} if "published" in claim else {}),
                    **{k: copy.deepcopy(claim[k]) for k in _PROVENANCE if k in claim}})
    return out
