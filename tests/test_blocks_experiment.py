"""The block-heterogeneity report from records with known answers: a CNN whose blocks share one spectrum
(heterogeneity 0) against a transformer with two disjoint blocks (√ln 2), over three seeds."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from landscape.errors import LandscapeError
from landscape.experiment import blocks
from landscape.experiment.studies import block_heterogeneity as study
from landscape.io import write_json

ROOT = Path(__file__).resolve().parents[1]


def _record(model: str, seed: int, spectra: dict) -> dict:
    rows = [{"block": name, "kind": "other", "dim": len(eigs), "method": "exact", "nodes": [eigs],
             "weights": [[1 / len(eigs)] * len(eigs)]} for name, eigs in spectra.items()]
    return {"model": model, "seed": seed, "train": {"train_loss": 0.1, "train_acc": 0.9, "test_loss": 0.2,
                                                    "test_acc": 0.8 + 0.01 * seed}, "spectra": {"blocks": rows}}


@pytest.fixture()
def records(tmp_path):
    cfg, claim = blocks.load_config()
    cfg = dataclasses.replace(cfg, seeds=3)
    out = tmp_path / "records" / "block_heterogeneity"
    out.mkdir(parents=True)
    for s in range(3):
        same = [0.0, 1.0 + s, 2.0]
        write_json(blocks.record_path(out, cfg.cnn, s), _record(cfg.cnn, s, {"a": same, "b": same, "c": same}))
        write_json(blocks.record_path(out, cfg.transformer, s),
                   _record(cfg.transformer, s, {"x": [0.0, 1.0], "y": [10.0 + s, 11.0 + s]}))
    return out, cfg, claim


def test_summary_table_and_study_from_known_records(records, tmp_path):
    out, cfg, claim = records
    runs = blocks.load_records(out)
    summary = blocks.summarize_blocks(runs, cfg, claim)
    cnn, vit = summary["models"][cfg.cnn], summary["models"][cfg.transformer]
    assert cnn["raw"]["estimate"] == 0.0 and cnn["raw"]["n"] == 3 and cnn["n_blocks"] == 3
    assert vit["raw"]["estimate"] == pytest.approx(math.sqrt(math.log(2)), abs=1e-9)
    t = summary["tests"]["raw"]
    assert t["mean"] == pytest.approx(math.sqrt(math.log(2)), abs=1e-9) and t["n"] == 3 and t["level"] == 0.975
    assert summary["verdict"] == t["verdict"] == "agrees"   # every seed's difference is √ln 2: a zero-width interval
    table = blocks.blocks_table(summary, cfg)
    assert "| raw (primary) | +0.833 |" in table and "agrees" in table
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    toml = (ROOT / "experiments" / "block_heterogeneity.toml").read_text().replace("seeds = 5 ", "seeds = 3 ")
    (experiments / "block_heterogeneity.toml").write_text(toml)
    store = SimpleNamespace(records=out.parent, experiments=experiments)
    assert study.table(store) == table
    assert cnn["without_top"]["estimate"] == 0.0 and cnn["top_blocks"] == ["a", "a", "a"]
    assert math.isnan(vit["without_top"]["estimate"])   # two blocks: nothing left to compare after removing one
    assert set(study.FIGURES) == set(blocks.FIGURES) and study.TABLES == {"block_heterogeneity": study.table}


def test_a_missing_seed_is_refused(records):
    out, cfg, _ = records
    blocks.record_path(out, cfg.cnn, 2).unlink()
    with pytest.raises(LandscapeError, match="lacks seeds"):
        blocks.check_seeds(blocks.load_records(out), cfg, (cfg.cnn, cfg.transformer))


def test_results_md_block_is_what_the_committed_records_give():
    import re

    cfg, claim = blocks.load_config()
    runs = blocks.load_records(ROOT / "records" / "block_heterogeneity")
    table = blocks.blocks_table(blocks.summarize_blocks(runs, cfg, claim), cfg)
    text = (ROOT / "RESULTS.md").read_text()
    found = re.search(r"<!-- generated: block_heterogeneity -->\n(.*?)<!-- end: block_heterogeneity -->", text, re.S)
    assert found and found.group(1) == table + "\n", "run python experiments/block_heterogeneity.py --report"
