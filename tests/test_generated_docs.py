"""Generated blocks of the docs regenerate from their committed records (no number typed by hand)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_scaling_model_tables_are_those_of_the_measured_runs():
    proc = _check("benchmarks/scaling_model.py", "--check", "docs/scaling.md")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_bf16_tables_of_results_are_those_of_the_records():
    proc = _check("experiments/bf16_study.py", "report", "--check", "RESULTS.md")
    assert proc.returncode == 0, proc.stderr[-2000:]
