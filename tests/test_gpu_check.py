"""The prepared GPU check script runs end to end: its --dry-run does every step at toy size on the CPU
and leaves the JSON each step promises (the GPU run itself is recorded in BENCHMARKS.md when a device is lent)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gpu_check_dry_run_writes_every_step(tmp_path, module_cache):
    env = {**os.environ, "PYTHON": sys.executable, "LANDSCAPE_CACHE": module_cache, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "device.json").read_text())["device"] == "cpu"
    for name in ("train", "hessian"):
        assert json.loads((tmp_path / f"{name}_time.json").read_text())["seconds"] > 0
    summary = _lines(tmp_path / "hessian_summary.json")[-1]
    assert summary["lambda_max"] > 0 and len(summary["top_eigenvalues"]) == 1
    real = _lines(tmp_path / "real_scale.jsonl")
    assert {r["what"] for r in real} >= {"problem", "gradient", "hvp", "top1", "slq"}
    assert next(r for r in real if r["what"] == "top1")["converged"]
    hvp = _lines(tmp_path / "hvp_vs_gradient.jsonl")
    assert {r["measure"] for r in hvp} == {"gradient", "hvp_func", "hvp_landscape", "published"}
    assert all(r["ratio"] > 0 for r in hvp if "ratio" in r)
    # the LM rows: none failed or timed out, and each wrote what BENCHMARKS.md reads
    rows = {name: _lines(tmp_path / f"{name}.jsonl") for name in ("lm_products", "lm_memory", "bf16_lambda", "fsdp")}
    assert not [r for lines in rows.values() for r in lines if r.get("failed")], proc.stderr[-2000:]
    assert {r["measure"] for r in rows["lm_products"]} == {"gradient", "hessian_func", "hessian_double_backward",
                                                           "hessian_finite_difference", "ggn_double_backward",
                                                           "published"}
    assert all(r["ratio"] > 0 for r in rows["lm_products"] if "ratio" in r)
    assert {r["operator"] for r in rows["lm_memory"]} == {"ggn", "hessian"}
    assert all(r["reference"]["ggn_peak_gb"] == 10.17 for r in rows["lm_memory"])
    assert [r["precision"] for r in rows["bf16_lambda"]] == ["float32", "bf16", "autocast"]
    assert all(r["lambda_max"] > 0 for r in rows["bf16_lambda"])
    (fsdp,) = rows["fsdp"]
    assert fsdp["ranks"] == 1 and fsdp["local_dim"] == fsdp["dim"] and fsdp["lambda_max"] > 0
