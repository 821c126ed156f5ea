"""landscape.distributed and train under torch.distributed: 2 gloo ranks on CPU equal one process.

The ranks run as real processes with torchrun's environment contract (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); one test goes through `torchrun --standalone` itself. Run as a script
(`python tests/test_distributed.py collectives`) this file is the worker of the collectives test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
else:
    from ranks import launch, worker_env

from landscape import distributed  # noqa: E402
from landscape import train as T  # noqa: E402
from landscape.checkpoint import load_checkpoint, load_training_state  # noqa: E402
from landscape.data import TensorData, part_slice, shard  # noqa: E402
from landscape.errors import LandscapeError  # noqa: E402

# ragged on purpose: 200 = 7·27 + 11, so 2 ranks get 13/14 of each batch and 5/6 of the last one
CFG = {"model": "fc", "model_config": {"kind": "plain", "connect": "ortho_feature:0.5", "depth": 3, "width": 16},
       "n_samples": 200, "batch_size": 27, "optimizer": "sgd", "lr": 0.05, "schedule": "step", "milestones": [2],
       "warmup_epochs": 1, "clip_grad": 1.0, "bias_reg": 1e-3, "weight_decay": 1e-4, "label_smoothing": 0.1,
       "device": "cpu", "progress": False}


def _flags(cfg: dict) -> list[str]:
    out = []
    for key, value in cfg.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            out += [flag, json.dumps(value) if isinstance(value, dict) else text]
    return out


@pytest.fixture(scope="module", autouse=True)
def _mnist1d(module_cache) -> None:
    """MNIST-1D generated once into the module's cache, read by every rank."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDSCAPE_CACHE", module_cache)
        from landscape.data import load_data

        load_data(n_samples=200)


pytestmark = pytest.mark.usefixtures("shared_cache")


def _assert_close_states(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# ---- in one process ----

def test_batch_parts_are_the_single_process_batches():
    """Shuffle and crop/flip draws are those of the whole batch: the W parts concatenate to it exactly."""
    X = torch.randn(23, 2, 8, 8)
    data = TensorData(X, torch.arange(23) % 5, 5, {"name": "toy"}, torch.zeros(2), torch.ones(2))
    for world in (2, 3):
        for augment in (False, True):
            whole = list(data.batches(6, shuffle=True, generator=torch.Generator().manual_seed(1),
                                      augment=augment))
            parts = [list(data.batches(6, shuffle=True, generator=torch.Generator().manual_seed(1),
                                       augment=augment, part=(r, world))) for r in range(world)]
            assert all(len(p) == len(whole) for p in parts)
            for i, (Xb, yb) in enumerate(whole):
                sizes = [len(p[i][1]) for p in parts]
                assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(yb)
                assert torch.equal(torch.cat([p[i][0] for p in parts]), Xb)
                assert torch.equal(torch.cat([p[i][1] for p in parts]), yb)
    with pytest.raises(LandscapeError, match="part must be"):
        next(data.batches(4, part=(2, 2)))


def test_shards_partition_the_data_and_single_process_helpers_are_identities():
    data = TensorData(torch.arange(10.0)[:, None], torch.arange(10), 10, {}, torch.zeros(1), torch.ones(1))
    shards = [shard(data, r, 4) for r in range(4)]
    assert [len(s) for s in shards] == [2, 3, 2, 3]
    assert torch.equal(torch.cat([s.y for s in shards]), data.y)
    assert len(shard(data, 0, 12)) == 0 and [part_slice(5, r, 2) for r in (0, 1)] == [slice(0, 2),
                                                                                                  slice(2, 5)]
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_reduce_sum(t) is t and torch.equal(t, torch.arange(6.0).reshape(3, 2))
    assert shard(data).y.equal(data.y) and distributed.main_first(lambda: 7) == 7
    distributed.agree(None)
    with pytest.raises(KeyError):
        distributed.agree(KeyError("own error"))
    with pytest.raises(LandscapeError, match="shard index"):
        shard(data, 4, 4)


# ---- two gloo ranks ----

def _collectives_worker(tmp: Path) -> None:
    """Run by each of 2 ranks (see __main__): every helper against a value known in closed form."""
    assert distributed.launched() and distributed.setup("cpu") == torch.device("cpu")
    r, w = distributed.rank(), distributed.world_size()
    assert w == 2 and r == int(os.environ["RANK"]) and distributed.comm_device().type == "cpu"
    # one all_reduce for a [dim, k] block: Σ_r (r+1)·V = 3·V for 2 ranks; in place, also non-contiguous
    V = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    block = (r + 1) * V.clone()
    assert distributed.all_reduce_sum(block) is block and torch.equal(block, 3 * V)
    col = ((r + 1) * V.clone()).t()
    distributed.all_reduce_sum(col)
    assert torch.equal(col, 3 * V.t())
    assert torch.equal(distributed.all_reduce_max(torch.tensor([r * 5, 7 - r])), torch.tensor([5, 7]))
    # the data-pass pattern the Hessian operator uses: per-shard sums, one reduction, divide by the global N
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(11, 3, generator=gen, dtype=torch.float64), torch.randint(0, 2, (11,), generator=gen)
    data = TensorData(X, y, 2, {}, torch.zeros(1), torch.ones(1))
    W0 = torch.randn(3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    mine = shard(data)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(mine.X @ W0, mine.y, reduction="sum"), W0)
    g = distributed.all_reduce_sum(g.clone()) / len(data)
    (ref,) = torch.autograd.grad(torch.nn.functional.cross_entropy(X @ W0, y), W0)
    torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-14)
    # BatchNorm statistics: rank 0's copied everywhere
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(float(r))
    distributed.broadcast_buffers(bn)
    assert torch.equal(bn.running_mean, torch.zeros(3))
    # main_first: rank 0 runs first, so rank 1 finds its file
    marker = tmp / "first"

    def first() -> bool:
        found = marker.exists()
        marker.write_text(str(r))
        return found

    assert distributed.main_first(first) is (r == 1)
    # agree: a failure on one rank is raised on both
    try:
        distributed.agree(LandscapeError("bad input on rank 1") if r == 1 else None)
    except LandscapeError as e:
        assert str(e) == ("rank 1: bad input on rank 1" if r == 0 else "bad input on rank 1")
    else:
        raise AssertionError("agree did not raise")
    try:
        distributed.main_first(lambda: 1 / 0 if r == 0 else None)
    except ZeroDivisionError:
        assert r == 0
    except LandscapeError as e:
        assert r == 1 and str(e) == "ZeroDivisionError: division by zero"
    else:
        raise AssertionError("main_first did not raise")
    distributed.barrier()
    distributed.shutdown()
    assert not distributed.active() and distributed.world_size() == 1


def test_collectives_on_two_gloo_ranks(tmp_path):
    results = launch([str(Path(__file__)), "collectives", str(tmp_path)])
    for r, res in enumerate(results):
        assert res.returncode == 0, f"rank {r}: {res.stderr}"


def test_two_ranks_follow_the_single_process_trajectory(tmp_path):
    """1 process for epoch 1, 2 ranks (resumed) for epoch 2, 1 process for epoch 3 = 3 epochs in 1 process.

    Stresses every piece of state that crosses ranks and resumes: ragged batch slices, stochastic
    orthogonal updates (global RNG), SGD momentum, warm-up + step schedule, clipping, BiasReg, label smoothing.
    """
    run = tmp_path / "run"
    reference = T.train({**CFG, "epochs": 3})
    T.train({**CFG, "epochs": 1, "out": str(run)})
    results = launch(["-m", "landscape.train", *_flags({**CFG, "epochs": 2, "out": str(run), "resume": True})])
    assert [res.returncode for res in results] == [0, 0], results[0].stderr + results[1].stderr
    assert results[0].stdout.startswith("epoch 2: train loss") and results[1].stdout == ""
    assert "Traceback" not in results[0].stderr + results[1].stderr
    state = load_training_state(run / "checkpoint.pt")
    assert state["meta"]["epoch"] == 2 and state["meta"]["world_size"] == 2
    record = json.loads((run / "config.json").read_text())
    assert record["world_size"] == 2
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    two = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(_strip(two), _strip(reference["history"][:2]), strict=True):
        assert got.keys() == want.keys()
        for k in got:
            assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k

    resumed = T.train({**CFG, "epochs": 3, "out": str(run), "resume": True})
    assert resumed["world_size"] == 1 and [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    _assert_close_states(resumed["model"].state_dict(), reference["model"].state_dict())
    model, _ = load_checkpoint(run / "checkpoint.pt")
    _assert_close_states(model.state_dict(), reference["model"].state_dict())


def test_fsdp_ranks_follow_the_single_process_trajectory_and_share_its_checkpoints(tmp_path):
    """1 process for epoch 1, 2 ranks with the model sharded by FSDP2 (--fsdp, resumed) for epoch 2, 1 process for
    epoch 3 = 3 epochs in 1 process: the sharded run takes the full optimizer state (momentum) onto its shards and
    writes the full states back in a single process's format."""
    cfg = {k: v for k, v in CFG.items() if k != "bias_reg"}            # --bias-reg is refused with --fsdp
    run = tmp_path / "run"
    reference = T.train({**cfg, "epochs": 3})
    T.train({**cfg, "epochs": 1, "out": str(run)})
    results = launch(["-m", "landscape.train", *_flags({**cfg, "epochs": 2, "out": str(run), "resume": True}),
                      "--fsdp"])
    assert [res.returncode for res in results] == [0, 0], results[0].stderr[-3000:] + results[1].stderr[-3000:]
    assert results[0].stdout.startswith("epoch 2: train loss") and results[1].stdout == ""
    state = load_training_state(run / "checkpoint.pt")
    assert state["meta"]["epoch"] == 2 and state["meta"]["train"]["fsdp"]
    assert all(not hasattr(t, "to_local") for t in state["model_state"].values())      # full tensors
    two = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(_strip(two), _strip(reference["history"][:2]), strict=True):
        for k in got:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7), k
    resumed = T.train({**cfg, "epochs": 3, "out": str(run), "resume": True})
    _assert_close_states(resumed["model"].state_dict(), reference["model"].state_dict(), atol=1e-5)
    with pytest.raises(LandscapeError, match="--fsdp needs torchrun"):
        T.train({**cfg, "epochs": 1, "fsdp": True})


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _worker_pid(agent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=rank (Linux /proc)."""
    for pid in _children(agent):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_torchrun_stops_every_rank_when_one_gets_sigterm(tmp_path):
    run = tmp_path / "run"
    cfg = {**CFG, "epochs": 400, "out": str(run)}
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              "-m", "landscape.train", *_flags(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=worker_env())
    try:
        deadline = time.monotonic() + 90
        while not (run / "checkpoint.pt").exists() and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        rank1 = _worker_pid(agent.pid, 1)
        assert rank1 is not None, "no rank-1 worker found"
        os.kill(rank1, signal.SIGTERM)                       # only rank 1 is told; rank 0 must stop with it
        out, err = agent.communicate(timeout=60)
    finally:
        agent.kill()
    assert err.count("interrupted by SIGTERM") == 1 and "resume with --resume" in err, err
    # rank 0 got no signal, yet stopped cleanly: it learned of rank 1's in the per-step all_reduce (had the
    # ranks stopped after different steps, one would have crashed in a collective with a traceback)
    assert "exitcode  : 143" in err, err
    assert err.count("Traceback") == 1 and "ChildFailedError" in err, err  # torchrun's own report only
    assert out == ""
    done = load_checkpoint(run / "checkpoint.pt")[1]["epoch"]
    assert 1 <= done < 400
    assert len((run / "metrics.jsonl").read_text().splitlines()) == done
    short = {**cfg, "epochs": done + 1}
    resumed = T.train({**short, "resume": True})                   # 2 ranks → 1
    reference = T.train({**short, "out": None})
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, done + 2))
    _assert_close_states(resumed["model"].state_dict(), reference["model"].state_dict())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nccl_rank_trains_on_its_gpu(tmp_path):
    results = launch(["-m", "landscape.train", *_flags({**CFG, "device": "cuda", "epochs": 1,
                                                         "out": str(tmp_path / "run")})], world=1)
    assert results[0].returncode == 0, results[0].stderr
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")[1]["epoch"] == 1


if __name__ == "__main__" and sys.argv[1:2] == ["collectives"]:
    _collectives_worker(Path(sys.argv[2]))
