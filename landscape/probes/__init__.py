"""Probes: hooks on any model's blocks that measure, per block, what the skip-connection papers argue about.

- gradient-norm preservation ‖∂L/∂x_l‖ / ‖∂L/∂x_{l+1}‖ (docs/methods.md §C.4) and its Jacobian bounds (§C.1);
- stream-vs-update geometry x_norm2, f_par_norm2, f_ortho_norm2, rho_par, rho_ortho, cos_x_out (§B.3);
- singularities of the branch units: dead, overlapping, linearly dependent (§A.2).

    with probe(model, metrics=("grad_norm", "stream")) as p:
        loss_fn(model(X), y).backward()
    to_csv(p.records, "probes.csv")

    records = run_probes(model, loss_fn, (X, y), metrics=("grad_norm", "singularity"), batch_size=1000)

During training: `python -m landscape.train ... --probes grad_norm,stream,singularity --probe-every K`
(records in OUT/probes.jsonl), or `train(cfg, step_callbacks=[make_probe_callback(names, every)])`.

`__all__` lists what users call; the building blocks (`stream_stats`, `singularity_stats`, `combined_norm`,
`jacobian_extremes`, ...) stay importable from here and from their modules.
"""

# the building blocks (stream_stats, combined_norm, ...) stay importable here but are not in __all__
# ruff: noqa: F401
from landscape.probes.blocks import Block, Site, find_blocks
from landscape.probes.grad_norm import GRAD_METRICS, combined_norm
from landscape.probes.hooks import METRICS, Probe, probe
from landscape.probes.jacobian import block_jacobian_extremes, jacobian_extremes
from landscape.probes.options import ProbeOptions
from landscape.probes.records import make_record, read_records, records_by_block, records_to_table, to_csv, to_json
from landscape.probes.run import run_probes
from landscape.probes.singularity import (
    ACT_METRICS,
    WEIGHT_METRICS,
    SingularityAccumulator,
    singularity_stats,
    weight_stats,
)
from landscape.probes.stream import STREAM_METRICS, stream_stats
from landscape.probes.training import TRAIN_PROBES, ProbeCallback, make_probe_callback

__all__ = [
    "METRICS", "TRAIN_PROBES", "ProbeCallback", "ProbeOptions", "find_blocks", "make_probe_callback", "probe",
    "read_records", "records_by_block", "records_to_table", "run_probes", "to_csv", "to_json",
]
