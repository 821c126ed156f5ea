"""Result keys of one run: the numbers `result.json` holds, computed from its plain records.

Pure functions of plain data (metrics.jsonl rows, probe records, measurement dicts); no model, no file.
Every definition the notebooks, summaries and RESULTS.md use lives here once:

    train_keys          train_acc, train_loss, test_acc, test_loss (last epoch), best_train_acc,
                        epoch_to_target (first epoch with train accuracy ≥ target), train_seconds
    measurement_keys    slq_* and exact_* (lambda_max, lambda_min, trace, degenerate_ratio, negative_ratio at
                        ε·λmax, and where the engine reports them the scale-free bulk_degenerate_ratio and
                        effective_rank, and the quadrature's guaranteed brackets *_low / *_high of the
                        thresholded masses, `SpectralDensity.mass_bounds`), plus probe_keys of the records
    probe_keys          norm preservation (docs/methods.md §C): the gradient-norm ratio r_l =
                        ‖∂L/∂x_l‖ / ‖∂L/∂x_{l+1}‖ over the *residual* blocks only —
                            grad_ratio_min / _max / _gmean   (min, max, geometric mean of r_l)
                            grad_dev_max = max_l |log10 r_l| (0 = every block preserves the norm)
                            grad_absdev_mean = mean_l |log10 r_l|, n_residual_blocks
                            n_failed_blocks: blocks whose r_l is not a positive finite number (an
                            overflowed or vanished gradient); each counts as a failure, |log10 r_l| =
                            FAILED_DEV (38, float32's range in decades), never as a gap
                        and separately over the transitions (dimension-changing blocks, e.g. an FC net's
                        40 → width input block, which has no skip): grad_ratio_transition_min / _max,
                        grad_dev_transition_max. Mixing the two lets a transition's deviation pass for
                        the residual blocks' (Zaeemzadeh et al.'s Theorem 1 is about residual blocks; the
                        transitions are where their ProcResNet acts).
                        grad_gain = ‖∂L/∂x_first‖ / ‖∂L/∂x_last‖ (end to end, transitions included),
                        n_blocks (connections with a grad_ratio record);
                        <metric>_mean: the block mean of EVERY probe metric in the records (stream and
                        singularity metrics, e.g. the centered activation overlap and its pair fraction
                        overlap_act_centered_frac_mean, the weight overlap, both linear-dependence
                        statistics), so a statistic a probe defines is never left out; x_norm2_last.
    final_keys          the result keys at the end of a run: each key from the LAST measured epoch that has
                        it (unit statistics measured every 10 epochs of a 15-epoch run come from epoch 10),
                        and which keys came from an earlier epoch.
    step_keys           x_norm2_peak (largest ‖x‖² at the last stream site over the step probes) and
                        transition_step: its step when the peak is a transition point (docs/methods.md §B.3,
                        `transition_point`): a rise, then a sustained decay, each over at least
                        TRANSITION_SPAN of the run's steps and by at least TRANSITION_CHANGE of the peak;
                        null otherwise (an early transient, a late noise dip, still rising at the end).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

TRAIN_KEYS = ("train_acc", "train_loss", "test_acc", "test_loss", "best_train_acc", "epoch_to_target",
              "train_seconds")
SPECTRUM_KEYS = ("lambda_max", "lambda_min", "trace", "degenerate_ratio", "negative_ratio", "bulk_degenerate_ratio",
                 "effective_rank", "null_ratio", "degenerate_ratio_low", "degenerate_ratio_high", "negative_ratio_low",
                 "negative_ratio_high", "bulk_degenerate_ratio_low", "bulk_degenerate_ratio_high")
PROBE_KEYS = ("grad_ratio_min", "grad_ratio_max", "grad_ratio_gmean", "grad_dev_max", "grad_absdev_mean",
              "n_residual_blocks", "n_failed_blocks",
              "grad_ratio_transition_min", "grad_ratio_transition_max", "grad_dev_transition_max",
              "grad_gain", "n_blocks", "x_norm2_last")
STEP_KEYS = ("transition_step", "x_norm2_peak")
# a norm-preservation ratio that is not a positive finite number counts as this deviation (decades): the whole
# float32 range, log10(3.4e38) ≈ 38.5, rounded down — a failure, never left out of the mean
FAILED_DEV = 38.0
# the transition point (declared before the re-runs of issue 20): a rise from the first record to the peak and
# a decay from the peak to the mean of the last TRANSITION_SPAN of the run, each spanning at least
# TRANSITION_SPAN of the run's steps and changing by at least TRANSITION_CHANGE × the peak
TRANSITION_SPAN = 0.1
TRANSITION_CHANGE = 0.1
# the exact spectrum's numerically null mass: mu(|lambda| < NULL_EPS * lambda_max) (docs/methods.md §A.4)
NULL_EPS = 1e-7
# the probe metrics whose block means are named in check_key's list (any other probe metric's mean is
# accepted by pattern, since probe_keys averages every metric it finds)
MEAN_METRICS = ("x_norm2", "f_par_norm2", "f_ortho_norm2", "rho_par", "rho_ortho", "cos_x_out", "dead_frac",
                "overlap_act", "overlap_act_frac", "overlap_act_centered", "overlap_act_centered_frac",
                "overlap_weight", "overlap_weight_frac", "eff_rank", "small_sv_frac")


# the shape of each key's values (docs/methods.md §H.4): ratios and gains are compared as ratios A/B on the log
# scale; fractions in [0, 1] have differences in [-1, 1] and single-cell intervals on the logit scale
LOG_KEYS = re.compile(r"(grad_gain|grad_ratio(_transition)?_(min|max|gmean)|x_norm2_(last|peak)|\w*_norm2_mean"
                      r"|(slq|exact)_lambda_max|eos_ratio\w*)$")
FRACTION_KEYS = re.compile(r"((train|test|best_train)_acc|(slq|exact)_\w*(degenerate|negative|null)_ratio(_low|_high)?"
                           r"|\w*_frac_mean|eff_rank_mean|overlap_\w*_mean)$")


def scale_of(key: str) -> str:
    """"log" for ratios and gains (positive, compared as A/B), "fraction" for values in [0, 1], else "linear".

    Args:
        key: a result key.

    Returns:
        "log", "fraction" or "linear".
    """
    base = key[5:] if key.startswith("init.") else key
    if LOG_KEYS.fullmatch(base):
        return "log"
    return "fraction" if FRACTION_KEYS.fullmatch(base) and "pairs" not in base else "linear"


def check_key(key: str) -> str | None:
    """None when `key` names a result key ("init.KEY" for the value at initialization), else the problem.

    Args:
        key: the key.

    Returns:
        None, or why it is not a result key.
    """
    base = key[5:] if key.startswith("init.") else key
    known = {*TRAIN_KEYS, *PROBE_KEYS, *STEP_KEYS, *(f"{m}_mean" for m in MEAN_METRICS),
             *(p + k for p in ("slq_", "exact_") for k in SPECTRUM_KEYS)}
    if base in known or re.fullmatch(r"[a-z0-9_]+_mean", base):
        return None
    return f"unknown result key {key!r}; known: {', '.join(sorted(known))}"


def train_keys(history: Sequence[Mapping], target: float | None) -> dict:
    """The result keys of a run's training history: final and best accuracies and losses, epochs to the target.

    Args:
        history: the epoch records (metrics.jsonl).
        target: the training accuracy whose first epoch is `epochs_to_target` (None: not reported).

    Returns:
        {key: value}; {} without history.
    """
    if not history:
        return {}
    last = history[-1]
    out = {k: last[k] for k in ("train_acc", "train_loss", "test_acc", "test_loss")}
    out["best_train_acc"] = max(h["train_acc"] for h in history)
    out["train_seconds"] = sum(h["seconds"] for h in history)
    if target is not None:
        out["epoch_to_target"] = next((h["epoch"] for h in history if h["train_acc"] >= target), None)
    return out


def _ratio_keys(ratio: np.ndarray, suffix: str) -> dict:
    if not ratio.size:
        return {}
    ok = np.isfinite(ratio) & (ratio > 0)
    dev = np.where(ok, np.abs(np.log10(np.where(ok, ratio, 1.0))), FAILED_DEV)
    good = ratio[ok]
    out = {f"grad_dev{suffix}_max": float(dev.max())}
    if good.size:
        out |= {f"grad_ratio{suffix}_min": float(good.min()), f"grad_ratio{suffix}_max": float(good.max())}
    if suffix:
        return out
    if good.size:
        out["grad_ratio_gmean"] = float(np.exp(np.log(good).mean()))
    return {**out, "grad_absdev_mean": float(dev.mean()), "n_residual_blocks": int(ratio.size),
            "n_failed_blocks": int((~ok).sum())}


def norm_preservation(records: Iterable[Mapping], transitions: Iterable[str] = ()) -> dict:
    """Gradient-norm ratio statistics over the residual blocks, and over the `transitions` separately
    (see the module docstring); {} without grad_ratio records.

    Args:
        records: probe records (grad_ratio rows).
        transitions: the blocks that change shape (reported apart).

    Returns:
        {"grad_dev_max", "grad_ratio_min", "grad_ratio_max", "grad_ratio_gmean", ...} and the same keys with
        "_transition" for the transitions.
    """
    transitions = set(transitions)
    rows = [(r["block"], r["value"]) for r in records if r["metric"] == "grad_ratio"]
    value = lambda v: math.nan if v is None else float(v)  # noqa: E731
    residual = np.array([value(v) for b, v in rows if b not in transitions], dtype=float)
    trans = np.array([value(v) for b, v in rows if b in transitions], dtype=float)
    return {**_ratio_keys(residual, ""), **_ratio_keys(trans, "_transition")}


def probe_keys(records: Sequence[Mapping], transitions: Iterable[str] = ()) -> dict:
    """Headline numbers of one measurement's probe records (see the module docstring).

    Args:
        records: the probe records {"block", "metric", "value"} of one measurement.
        transitions: the dimension-changing blocks, reported apart.

    Returns:
        {key: value}.
    """
    by: dict[str, list[float]] = {}
    for r in records:
        by.setdefault(r["metric"], []).append(math.nan if r["value"] is None else float(r["value"]))

    def vals(metric: str) -> np.ndarray:
        return np.array(by.get(metric, []), dtype=float)

    out = norm_preservation(records, transitions)
    g_in, g_out = vals("grad_norm_in"), vals("grad_norm_out")
    if g_in.size and g_out.size and g_out[-1] > 0:
        out["grad_gain"] = float(g_in[0] / g_out[-1])
    if by.get("grad_ratio"):
        out["n_blocks"] = len(by["grad_ratio"])
    for metric in by:
        v = vals(metric)
        out[f"{metric}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    if vals("x_norm2").size:
        out["x_norm2_last"] = float(vals("x_norm2")[-1])
    return out


def transition_point(records: Iterable[Mapping], metric: str = "x_norm2", span: float = TRANSITION_SPAN,
                     change: float = TRANSITION_CHANGE) -> dict:
    """The peak of `metric` at the last site over steps: {"step", "value", "interior", "block"}, or {} when there
    is no finite value. `interior` (a transition point) requires, with T the run's step range:
    the peak at least span·T after the first record and span·T before the last; a rise, peak ≥ first +
    change·peak; a sustained decay, mean of the records in the last span·T ≤ (1 − change)·peak.

    Args:
        records: step probe records {"step", "block", "metric", "value"}.
        metric: the metric whose peak is sought.
        span: the fraction of the step range the peak must keep from either end (and the decay window).
        change: the relative rise before and decay after the peak.

    Returns:
        {"step", "value", "interior", "block"}, or {}.
    """
    rows = [r for r in records if r["metric"] == metric]
    if not rows:
        return {}
    last = rows[-1]["block"]
    series = sorted((r["step"], float(r["value"])) for r in rows
                    if r["block"] == last and r["value"] is not None and math.isfinite(float(r["value"])))
    if not series:
        return {}
    steps = np.array([s for s, _ in series], dtype=float)
    values = np.array([v for _, v in series])
    i = int(np.argmax(values))  # the first of equal maxima
    first, end = steps[0], steps[-1]
    width = span * (end - first)
    peak = values[i]
    tail = values[steps >= end - width]
    interior = bool(width > 0 and steps[i] - first >= width and end - steps[i] >= width
                    and peak - values[0] >= change * peak and tail.mean() <= (1 - change) * peak)
    return {"step": series[i][0], "value": series[i][1], "interior": interior, "block": last}


def step_keys(records: Sequence[Mapping]) -> dict:
    """transition_step (null unless the peak is a transition point) and x_norm2_peak of the step probes.

    Args:
        records: the step probe records of one run.

    Returns:
        {"transition_step", "x_norm2_peak"}, or {} without x_norm2 records.
    """
    peak = transition_point(records)
    if not peak:
        return {}
    return {"transition_step": peak["step"] if peak["interior"] else None, "x_norm2_peak": peak["value"]}


def final_keys(measured: Mapping[int, Mapping]) -> tuple[dict, dict]:
    """(keys, from_epoch): measurement_keys of the last measured epoch, each key it lacks taken from the latest
    earlier epoch that has it; from_epoch names those keys and their epoch.

    Args:
        measured: {epoch: measure/epochNNN.json}.

    Returns:
        (keys, {key: epoch} for the keys taken from an earlier epoch).
    """
    out: dict = {}
    earlier: dict = {}
    order = sorted(measured, reverse=True)
    for epoch in order:
        for k, v in measurement_keys(measured[epoch]).items():
            if k not in out:
                out[k] = v
                if epoch != order[0]:
                    earlier[k] = epoch
    return out, earlier


def measurement_keys(m: Mapping) -> dict:
    """Result keys of one measure/epochNNN.json.

    Args:
        m: the measurement (spectrum, exact, probes sections).

    Returns:
        {key: value}: "slq_*" and "exact_*" spectrum keys and the probe keys.
    """
    out: dict = {}
    for section, prefix in (("spectrum", "slq_"), ("exact", "exact_")):
        for k in SPECTRUM_KEYS:
            if k in m.get(section, {}):
                out[prefix + k] = m[section][k]
    return {**out, **probe_keys(m.get("probes", []), m.get("transitions", ()))}


def setting_value(setting: Mapping, key: str | None = None) -> float | str | None:
    """A cell's swept value: `key`'s entry of its setting (None: the first), a "mode:value" string read as its
    number; None for an unswept cell (empty setting).

    Args:
        setting: the cell's {swept key: value}.
        key: the swept key (None: the first).

    Returns:
        The value.
    """
    if not setting:
        return None
    value = setting[key] if key else next(iter(setting.values()))
    if isinstance(value, str) and ":" in value:
        try:
            return float(value.rpartition(":")[2])
        except ValueError:
            return value
    return value
