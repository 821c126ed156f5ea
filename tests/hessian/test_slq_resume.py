"""Checkpointed SLQ: a Lanczos run stopped mid-way and resumed from its saved state gives bit-identical
results to an uninterrupted run, in the library and through `python -m landscape.hessian --resume`."""

from __future__ import annotations

import io
import json
import os
import signal

import numpy as np
import pytest
import torch

from landscape.cli import run_cli
from landscape.errors import LandscapeError
from landscape.hessian import Checkpoint, as_operator, lanczos, slq_density
from landscape.hessian.cli.main import main

from .test_cli import ckpt  # noqa: F401 - the module-scoped tiny checkpoint fixture

D = torch.float64


class _Stop(Exception):
    pass


def _matrix(eigs: torch.Tensor) -> torch.Tensor:
    n = eigs.numel()
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D, generator=torch.Generator().manual_seed(1)))
    return Q @ torch.diag(eigs.to(D)) @ Q.T


def _saved_after(run, at: int) -> dict:
    """Run until the state after `at` iterations, stop there, and return it after a torch.save round trip."""
    saved = {}

    def on_state(state):
        if state["done"] == at:
            saved.update(state)
            raise _Stop

    with pytest.raises(_Stop):
        run(on_state=on_state)
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _op(A: torch.Tensor):
    return as_operator(lambda V: A @ V, A.shape[0], A.dtype)


@pytest.mark.parametrize("reorth", ["full", "selective", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_resume_is_bit_identical(reorth, dtype):
    A = _matrix(torch.cat([torch.linspace(-1, 1, 57, dtype=D), torch.tensor([4.0, 9.0, 20.0], dtype=D)])).to(dtype)

    def run(every=10, state=None, on_state=None):
        return lanczos(_op(A), iters=20, vectors=3, seed=5, reorth=reorth,
                       checkpoint=Checkpoint(state, on_state, every))

    full = run()
    at = 7 if reorth != "selective" else 12  # selective: after its replay (step 4-10 here), so Y is in the state
    state = _saved_after(lambda **kw: run(every=at, **kw), at)
    assert state["done"] == at and state["alpha"].shape == (3, at) and state["beta"].shape == (3, at)
    assert ("basis" in state) == (reorth == "full")
    assert (state.get("ritz_vectors", torch.zeros(0)).numel() > 0) == (reorth == "selective")
    resumed = run(state=state, every=at)
    assert np.array_equal(resumed.alpha, full.alpha) and np.array_equal(resumed.beta, full.beta)
    for a, b in zip(resumed.ritz(), full.ritz()):
        assert np.array_equal(a, b)


def test_resume_across_a_breakdown_keeps_the_random_stream_and_basis():
    """Five distinct eigenvalues: each vector breaks down after five steps and restarts from the generator."""
    A = _matrix(torch.tensor([1.0, 2.0, 3.0, 5.0, 8.0], dtype=D).repeat_interleave(8))

    def run(every=10, state=None, on_state=None):
        return lanczos(_op(A), iters=20, vectors=2, seed=3, keep_basis=True,
                       checkpoint=Checkpoint(state, on_state, every))

    full = run()
    assert full.breakdowns > 0
    resumed = run(state=_saved_after(lambda **kw: run(every=4, **kw), 8))
    assert resumed.breakdowns == full.breakdowns
    assert np.array_equal(resumed.alpha, full.alpha) and np.array_equal(resumed.beta, full.beta)
    assert torch.equal(resumed.basis, full.basis)


def test_slq_density_resumes():
    A = _matrix(torch.linspace(0, 3, 50, dtype=D))

    class Op:
        dim, dtype, device = 50, D, torch.device("cpu")

        def matmat(self, V):
            return A @ V

    full = slq_density(Op(), iters=15, vectors=3, seed=2)
    state = _saved_after(lambda on_state: slq_density(Op(), iters=15, vectors=3, seed=2,
                                                      checkpoint=Checkpoint(on_state=on_state, every=5)), 10)
    resumed = slq_density(Op(), iters=15, vectors=3, seed=2, checkpoint=Checkpoint(state))
    assert np.array_equal(resumed.nodes, full.nodes) and np.array_equal(resumed.weights, full.weights)


@pytest.mark.parametrize(
    "change, field",
    [({"iters": 12}, "iters"), ({"seed": 1}, "seed"), ({"reorth": "none"}, "reorth"), ({"vectors": 3}, "vectors")],
)
def test_fingerprint_mismatch_names_the_field(change, field):
    A = _matrix(torch.linspace(0, 1, 30, dtype=D))
    kw = {"iters": 10, "vectors": 2, "seed": 0, "reorth": "full"}
    state = _saved_after(lambda on_state: lanczos(_op(A), **kw, checkpoint=Checkpoint(on_state=on_state, every=3)), 3)
    with pytest.raises(LandscapeError, match=f"state is for {field}="):
        lanczos(_op(A), **{**kw, **change}, checkpoint=Checkpoint(state))
    with pytest.raises(LandscapeError, match="dtype"):
        lanczos(_op(A.float()), **kw, checkpoint=Checkpoint(state))
    with pytest.raises(LandscapeError, match="lacks q_prev"):
        lanczos(_op(A), **kw, checkpoint=Checkpoint({k: v for k, v in state.items() if k != "q_prev"}))


def _argv(path, out, *extra):
    base = ["--n-samples", "120", "--iters", "24", "--vectors", "3", "--top-k", "1", "--no-progress"]
    return [str(path), *base, "--out", str(out), *extra]


def _same_outputs(a, b):
    sa, sb = (json.loads((d / "spectrum.json").read_text()) for d in (a, b))
    for key in ("lambda_max", "lambda_min", "trace", "trace_stderr", "negative_ratio", "degenerate_ratio", "density"):
        assert sa[key] == sb[key], key
    assert sa["top_eigenvalues"] == sb["top_eigenvalues"]
    with np.load(a / "spectrum.npz") as fa, np.load(b / "spectrum.npz") as fb:
        for key in fa.files:
            assert np.array_equal(fa[key], fb[key]), key


def test_cli_sigterm_then_resume_matches_an_uninterrupted_run(ckpt, monkeypatch, capsys):  # noqa: F811
    from landscape.hessian.cli.state import StateFile

    path, tmp, *_ = ckpt
    handler = signal.getsignal(signal.SIGTERM)
    ref, out = tmp / "resume_ref", tmp / "resume_out"
    assert run_cli(main, _argv(path, ref)) == 0
    assert not (ref / "lanczos_state.pt").exists()

    on_state = StateFile.on_state

    def on_state_then_sigterm(self, state):
        on_state(self, state)
        if state["done"] == 10:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(StateFile, "on_state", on_state_then_sigterm)
    assert run_cli(main, _argv(path, out, "--state-every", "5")) == 143
    assert "resume with --resume" in capsys.readouterr().err
    saved = torch.load(out / "lanczos_state.pt", weights_only=True)
    assert saved["done"] == 10 and not (out / "spectrum.json").exists()
    assert signal.getsignal(signal.SIGTERM) is handler  # handlers restored

    monkeypatch.setattr(StateFile, "on_state", on_state)
    assert run_cli(main, _argv(path, out, "--state-every", "5", "--resume")) == 0
    assert not (out / "lanczos_state.pt").exists()
    _same_outputs(ref, out)


def test_cli_resume_without_state_starts_fresh_and_corrupt_state_is_an_error(ckpt, capsys):  # noqa: F811
    path, tmp, *_ = ckpt
    out = tmp / "resume_fresh"
    assert run_cli(main, _argv(path, out, "--resume", "--top-k", "0")) == 0
    assert "starting the SLQ run afresh" in capsys.readouterr().err
    (out / "lanczos_state.pt").write_bytes(b"not a torch file")
    assert run_cli(main, _argv(path, out, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "cannot read the Lanczos state" in err and "\n" not in err
    torch.save({"done": 5, "operator": "ggn", "checkpoint": str(path), "n_samples": 120}, out / "lanczos_state.pt")
    assert run_cli(main, _argv(path, out, "--resume")) == 2
    assert "operator='ggn'" in capsys.readouterr().err
