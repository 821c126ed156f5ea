"""Records round-trip through CSV / JSON / JSON lines (NaN kept as missing), pivot without pandas, and
the probes run on the project's own models (landscape.models) with the names the contract promises."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.models import build  # a failing import is a failure here, never a skip
from landscape.probes import make_record, probe, read_records, records_by_block, records_to_table, to_csv, to_json

RECS = [make_record(0, "blocks.0", "grad_ratio", 1.5), make_record(0, "blocks.1", "grad_ratio", float("nan")),
        make_record(10, "blocks.0", "grad_ratio", 0.5), {**make_record(10, "blocks.1", "x_norm2", 3.0), "epoch": 2}]


def same(a, b):
    assert len(a) == len(b)
    for r, s in zip(a, b):
        assert (r["step"], r["block"], r["metric"]) == (s["step"], s["block"], s["metric"])
        assert (math.isnan(r["value"]) and math.isnan(s["value"])) or r["value"] == s["value"]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    path = tmp_path / f"r{suffix}"
    if suffix == ".csv":
        to_csv(RECS, path)
    else:
        to_json(RECS, path, lines=suffix == ".jsonl")
    back = read_records(path)
    same(RECS, back)
    assert str(back[-1]["epoch"]) == "2"


def test_table_pivots_and_filters():
    rows, cols, table = records_to_table(RECS, rows="block", columns="step", where={"metric": "grad_ratio"})
    assert rows == ["blocks.0", "blocks.1"] and cols == [0, 10]
    np.testing.assert_array_equal(table, [[1.5, 0.5], [np.nan, np.nan]])


def test_by_block_nests_and_keeps_the_last_value():
    recs = [make_record(0, "b0", "m", 1.0), make_record(0, "b1", "m", 2.0), make_record(1, "b0", "m", 3.0),
            make_record(1, "b0", "n", 4.0)]
    assert records_by_block(recs) == {"b0": {"m": 3.0, "n": 4.0}, "b1": {"m": 2.0}}


def test_bad_files(tmp_path):
    with pytest.raises(LandscapeError, match="does not exist"):
        read_records(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LandscapeError, match="not valid JSON"):
        read_records(tmp_path / "bad.json")


@pytest.mark.parametrize(("name", "cfg", "shape", "metrics"), [
    ("fc", dict(kind="residual", depth=4, width=8, in_dim=5, n_classes=3), (6, 5),
     ("grad_norm", "stream", "singularity")),
    ("vit", dict(preset="tiny", dim=8, depth=2, heads=2, img_size=4, patch=2, n_classes=3), (2, 3, 4, 4),
     ("grad_norm", "stream")),
])
def test_landscape_models(name, cfg, shape, metrics, tmp_path):
    model = build(name, **cfg).double()
    X, y = torch.randn(*shape), torch.randint(0, 3, (shape[0],))
    with probe(model, metrics=metrics, step=3) as p:
        F.cross_entropy(model(X), y).backward()
    blocks = {r["block"] for r in p.records}
    if name == "vit":
        assert blocks == {"blocks.0", "blocks.1", "blocks.0:attn", "blocks.0:mlp", "blocks.1:attn", "blocks.1:mlp"}
    else:
        assert blocks == {f"blocks.{i}" for i in range(4)}
        # block 0 maps the input to the width: its stream and update differ in shape, so no B.3 record
        assert not [r for r in p.records if r["block"] == "blocks.0" and r["metric"] == "x_norm2"]
        z = model.blocks[1].branch(model.blocks[0](X))
        dead = (z.abs().amax(0) == 0).double().mean().item()
        got = {r["metric"]: r["value"] for r in p.records if r["block"] == "blocks.1"}
        assert got["dead_frac"] == dead
    same(p.records, read_records(p.to_json(tmp_path / "r.json")))


def test_drop_records_after_keeps_earlier_steps_and_refuses_other_files(tmp_path):
    from landscape.probes.records import drop_records_after

    path = to_json(RECS, tmp_path / "r.jsonl", lines=True)
    drop_records_after(path, 9)
    same(read_records(path), RECS[:2])
    drop_records_after(tmp_path / "missing.jsonl", 0)             # nothing to drop
    assert not (tmp_path / "missing.jsonl").exists()
    (tmp_path / "other.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(LandscapeError, match="not a records file"):
        drop_records_after(tmp_path / "other.jsonl", 0)
