"""landscape.memory: one budget rule (share of what /proc/meminfo or CUDA says is free) for every engine."""

import pytest
import torch

from landscape import memory


def _meminfo_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def test_budget_is_the_share_of_what_the_kernel_reports_free():
    free = _meminfo_available()
    got = memory.budget("cpu", 0.25)
    assert abs(got - 0.25 * free) < 0.05 * free  # other processes move MemAvailable between the two reads


def test_an_explicit_cap_replaces_the_rule_and_a_bad_share_is_refused():
    assert memory.budget("cpu", 0.5, max_memory=12345) == 12345
    with pytest.raises(ValueError, match="share"):
        memory.budget("cpu", 0.0)


def test_every_engine_takes_its_budget_from_the_one_rule(monkeypatch):
    """SLQ's memory plan and the operator's budget read memory.available_bytes (the grid too: surface tests)."""
    from landscape.hessian import HessianOperator
    from landscape.hessian.solvers.basis import plan_basis

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 20)
    op = HessianOperator(torch.nn.Linear(3, 2), torch.nn.functional.cross_entropy,
                         (torch.randn(8, 3), torch.randint(0, 2, (8,))))
    assert op.info()["budget_bytes"] == int((1 << 20) * memory.OPERATOR_SHARE)
    # a 1000-dim float32 chain of 20 iterations with its working vectors is 100 kB: 512 kB of budget holds 5
    diag = type("Diag", (), {"dim": 1000, "dtype": torch.float32, "device": torch.device("cpu")})()
    assert plan_basis(diag, iters=20, vectors=10, reorth="full").group == (1 << 19) // (25 * 4000)


def test_tensor_bytes_counts_nested_containers():
    t = torch.zeros(10, dtype=torch.float64)
    assert memory.tensor_bytes({"a": [t, (t,)], "b": 3}) == 160
