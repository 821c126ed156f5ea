"""landscape's SLQ against PyHessian, curvlinops and hessian-eigenthings, side by side on one problem.

Problem (the one of the peers' harness): an MLP 40 → width × depth → 10 (ReLU) trained 300 Adam steps
(lr 1e-3, batch 128) on 4,000 MNIST-1D samples; the operator is the Hessian of the mean cross-entropy
over all 4,000 samples, given as 8 batches of 500 (a single batch of 4,000 for PyHessian's
single-batch mode). Every tool runs `iters` Lanczos steps for `vectors` random vectors.

    PYTHONPATH=. /work/benchvenv/bin/python benchmarks/hessian_vs_peers.py              # 3,754 params, exact
    PYTHONPATH=. /work/benchvenv/bin/python benchmarks/hessian_vs_peers.py --width 256 --depth 4 --no-exact

Run it with a Python that has landscape (PYTHONPATH) and the peers on the same torch, so every tool
runs on the same build, threads and data.

Method. The parent builds the problem once (saved under /tmp) and the exact float64 spectrum of small
models (cached under /tmp), then runs every (tool, vectors) measurement in a fresh subprocess, the
tools interleaved round by round (`--repeat`), so drift on a shared machine hits them alike. Each
child loads the problem, sets its torch threads, runs one throw-away torch.func jvp-of-grad (torch
scripts its forward-AD decompositions once per process, 0.4-3 s that every forward-over-reverse tool
would pay once: reported as `jvp_warmup_seconds` and kept out of the comparison), times the
full-batch gradient (forward + backward over 4,000 samples, median of 21 after a warm-up: the unit),
reads its own peak RSS (VmHWM, the high-water mark of its own address space; tracemalloc cannot see
torch's CPU allocations), runs the tool once (construction included), reads the peak RSS again and
reports seconds, nodes and weights. Times are wall-clock and CPU (user + system of the process, all
threads): at one thread CPU time is nearly immune to other processes' load, so the `_cpu` ratios are
the robust figures on a shared machine. `peak_rss_mib` is the child's whole peak (interpreter, torch,
data included); `extra_peak_mib` is its growth over the peak before the tool ran: the tool's own
memory (0 when it stayed below the earlier high-water mark). `per_hvp_over_grad` = seconds /
(iters · vectors) / the child's own gradient time; `speedup_vs_pyhessian_loader` compares seconds
within one round. The W1 distance of an SLQ measure (k vectors × m nodes with weights w, each vector's
weights summing to 1, vectors equally weighted) to the exact spectrum (dim atoms of mass 1/dim) is
computed exactly: the integral of |F_exact − F_slq| over the merged sorted support. λmax is the
largest Ritz value, the trace dim · mean over vectors of Σ w θ (± its standard error). Each run prints
one JSON line per measurement; with --repeat ≥ 2 a final "median" line per measurement follows.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

N_SAMPLES, BATCH = 4000, 500
TOOLS = (
    "landscape-auto",
    "landscape-func",
    "landscape-double_backward",
    "pyhessian-batch",
    "pyhessian-loader",
    "curvlinops-lanczos",
    "curvlinops-matmat",
    "eigenthings-loader",
)
CACHE = Path("/tmp/landscape_bench")


# ---- the problem ----------------------------------------------------------------------------------


def mnist1d_train(n: int = N_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n samples of MNIST-1D's training split, generated offline (80% of the samples are train)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(n / 0.8)
    d = make_dataset(args)
    return torch.tensor(d["x"], dtype=torch.float32)[:n], torch.tensor(d["y"])[:n]


def mlp(width: int, depth: int, d_in: int = 40, d_out: int = 10) -> nn.Sequential:
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, d_out))


def build_problem(width: int, depth: int) -> Path:
    """Data + briefly trained MLP, in the peers' harness order of random draws; saved once per shape."""
    path = CACHE / f"problem_{width}x{depth}.pt"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    X, y = mnist1d_train()
    model = mlp(width, depth)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(300):
        idx = torch.randint(0, len(X), (128,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    tmp = path.with_suffix(".tmp")
    torch.save({"X": X, "y": y, "width": width, "depth": depth, "state": model.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def load_problem(path: Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    p = torch.load(path, weights_only=True)
    model = mlp(p["width"], p["depth"])
    model.load_state_dict(p["state"])
    return model.eval(), p["X"], p["y"]


def loader(X: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(X[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(X), BATCH)]


# ---- exact reference ------------------------------------------------------------------------------


def exact_eigenvalues(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Eigenvalues of the float64 Hessian, built column block by column block with vmapped
    forward-over-reverse products against the identity (torch.func only, independent of landscape)."""
    from torch.func import functional_call, grad, jvp, vmap

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [math.prod(s) for s in shapes]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    m64 = copy.deepcopy(model).double()
    X64 = X.double()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(m64, params, (X64,)), y)

    g = grad(loss)
    H = vmap(lambda v: jvp(g, (theta,), (v,))[1], chunk_size=128)(torch.eye(len(theta), dtype=torch.float64))
    return torch.linalg.eigvalsh((H + H.T) / 2).numpy()


def exact_cached(path: Path) -> tuple[np.ndarray, float]:
    """(eigenvalues, seconds to compute them; 0 when read from the cache keyed by the problem's bytes)."""
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cache = CACHE / f"exact_{key}.npy"
    if cache.exists():
        return np.load(cache), 0.0
    model, X, y = load_problem(path)
    t = time.perf_counter()
    eigs = exact_eigenvalues(model, X, y)
    seconds = time.perf_counter() - t
    np.save(cache, eigs)
    return eigs, seconds


def w1_distance(eigs: np.ndarray, nodes: np.ndarray, weights: np.ndarray) -> float:
    """Exact Wasserstein-1 distance between the exact spectral measure and an SLQ measure [k, m]."""
    w = weights / weights.sum(axis=1, keepdims=True) / weights.shape[0]
    points = np.concatenate([eigs, nodes.ravel()])
    mass = np.concatenate([np.full(len(eigs), 1.0 / len(eigs)), -w.ravel()])
    order = np.argsort(points, kind="stable")
    cdf_gap = np.cumsum(mass[order])[:-1]
    return float(np.sum(np.abs(cdf_gap) * np.diff(points[order])))


# ---- one measurement per child process --------------------------------------------------------------


def _peak_mib() -> float:
    """This process's peak RSS in MiB: VmHWM of /proc/self/status where there is one. getrusage's ru_maxrss
    is no good in a child on Linux: it keeps the parent's high-water mark across fork and exec, so every
    child of a parent that computed the exact spectrum would report at least the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB (other systems: bytes)


def _clock() -> np.ndarray:
    """(wall, CPU) seconds now; CPU is this process's user + system time over all its threads."""
    return np.array([time.perf_counter(), time.process_time()])


def _grad_seconds(model: nn.Module, X: torch.Tensor, y: torch.Tensor, reps: int = 21) -> np.ndarray:
    """(wall, CPU) median seconds of one full-batch forward + backward, after a warm-up."""
    crit = nn.CrossEntropyLoss()
    times = []
    for _ in range(reps + 1):
        model.zero_grad(set_to_none=True)
        t = _clock()
        crit(model(X), y).backward()
        times.append(_clock() - t)
    model.zero_grad(set_to_none=True)
    return np.median(np.stack(times[1:]), axis=0)


def _warm_forward_ad() -> float:
    """Seconds of a first torch.func jvp-of-grad: torch scripts its forward-AD decompositions once per
    process (seconds), a cost every forward-over-reverse tool pays once, taken out of the comparison."""
    from torch.func import grad, jvp

    x = torch.randn(4, 3)
    t = time.perf_counter()
    jvp(
        grad(lambda w: nn.functional.cross_entropy(torch.relu(x @ w), torch.tensor([0, 1, 2, 0]))),
        (torch.randn(3, 3),),
        (torch.randn(3, 3),),
    )
    return time.perf_counter() - t


def _landscape(model, X, y, iters, vectors, backend):
    from landscape.hessian import HessianOperator, slq_density

    t = time.perf_counter()
    op = HessianOperator(model, nn.CrossEntropyLoss(), loader(X, y), backend=backend)
    built = time.perf_counter() - t
    sd = slq_density(op, iters=iters, vectors=vectors, seed=1)
    return sd.nodes, sd.weights, {"build_seconds": built, **op.info(), "products": op.n_products}


def _pyhessian(model, X, y, iters, vectors, mode):
    from pyhessian import hessian

    def eig_shim(T, eigenvectors=False):  # PyHessian 0.1 calls torch.eig, removed in torch 1.9
        w, V = torch.linalg.eigh(T)
        return torch.stack([w, torch.zeros_like(w)], 1), V

    torch.eig = eig_shim
    torch.manual_seed(1)
    kw = {"data": (X, y)} if mode == "batch" else {"dataloader": loader(X, y)}
    nodes, weights = hessian(model, nn.CrossEntropyLoss(), cuda=False, **kw).density(iter=iters, n_v=vectors)
    return np.array(nodes, dtype=np.float64), np.array(weights, dtype=np.float64), {}


def _curvlinops_lanczos(model, X, y, iters, vectors):
    """fast_lanczos (Papyan 2020, no reorthogonalization) once per vector, on one batch of all samples (its
    fastest input: a list of 8 batches costs several times more per product, see curvlinops-matmat)."""
    from curvlinops import HessianLinearOperator
    from curvlinops.papyan2020traces.spectrum import fast_lanczos

    torch.manual_seed(1)
    H = HessianLinearOperator(
        model, nn.CrossEntropyLoss(), list(model.parameters()), [(X, y)], check_deterministic=False
    )
    runs = [fast_lanczos(H, iters) for _ in range(vectors)]
    nodes = np.stack([r[0].double().numpy() for r in runs])
    weights = np.stack([(r[1][0, :] ** 2).double().numpy() for r in runs])
    return nodes, weights, {}


def _eigenthings(model, X, y, iters, vectors):
    import hessian_eigenthings as he

    op = he.HessianOperator(model, loader(X, y), he.supervised_loss(nn.functional.cross_entropy))
    res = he.spectral_density(op, num_runs=vectors, lanczos_steps=iters, seed=1)
    return res.raw_eigenvalues.double().numpy(), res.raw_weights.double().numpy(), {}


def _curvlinops_matmat(model, X, y, vectors, tg):
    """One H @ v and H @ V (vectors columns: curvlinops vmaps jvp-of-grad over them), on one batch of all
    samples and on the 8 batches; (wall, CPU) seconds per vector over the gradient's (median of 3)."""
    from curvlinops import HessianLinearOperator

    out = {}
    for name, data in (("", [(X, y)]), ("loader_", loader(X, y))):
        H = HessianLinearOperator(
            model, nn.CrossEntropyLoss(), list(model.parameters()), data, check_deterministic=False
        )
        V = torch.randn(H.shape[1], vectors)
        H @ V[:, 0]
        t1, tk = _median_seconds(H.__matmul__, V[:, 0]) / tg, _median_seconds(H.__matmul__, V) / vectors / tg
        out.update(
            {
                f"{name}hvp_over_grad": t1[0],
                f"{name}hvp_over_grad_cpu": t1[1],
                f"{name}matmat_per_vec_over_grad": tk[0],
                f"{name}matmat_per_vec_over_grad_cpu": tk[1],
            }
        )
    return out


def _median_seconds(f, arg, reps: int = 3) -> np.ndarray:
    ts = []
    for _ in range(reps):
        t = _clock()
        f(arg)
        ts.append(_clock() - t)
    return np.median(np.stack(ts), axis=0)


def worker(tool: str, problem: Path, iters: int, vectors: int, threads: int) -> dict:
    """Run one measurement in this (fresh) process and return its record."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, X, y = load_problem(problem)
    warm = _warm_forward_ad()
    tg = _grad_seconds(model, X, y)
    before = _peak_mib()
    rec: dict = {"grad_seconds": tg[0], "grad_cpu_seconds": tg[1], "jvp_warmup_seconds": warm}
    t = _clock()
    if tool == "curvlinops-matmat":
        rec.update(_curvlinops_matmat(model, X, y, vectors, tg))
    else:
        family, mode = tool.split("-", 1)
        run = {
            "landscape": lambda: _landscape(model, X, y, iters, vectors, mode),
            "pyhessian": lambda: _pyhessian(model, X, y, iters, vectors, mode),
            "curvlinops": lambda: _curvlinops_lanczos(model, X, y, iters, vectors),
            "eigenthings": lambda: _eigenthings(model, X, y, iters, vectors),
        }[family]
        nodes, weights, extra = run()
        seconds = _clock() - t
        per_hvp = seconds / (iters * vectors) / tg
        rec.update(
            seconds=seconds[0],
            cpu_seconds=seconds[1],
            per_hvp_over_grad=per_hvp[0],
            per_hvp_over_grad_cpu=per_hvp[1],
            nodes=nodes.tolist(),
            weights=weights.tolist(),
            **extra,
        )
    peak = _peak_mib()
    rec.update(peak_rss_mib=peak, extra_peak_mib=max(0.0, peak - before))
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in rec.items()}


# ---- parent: problem, reference, children, summary -------------------------------------------------


def _child_env() -> dict:
    """The environment with the repository root first on PYTHONPATH, so children import this landscape."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def run_child(tool: str, problem: Path, iters: int, vectors: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        tool,
        "--problem",
        str(problem),
        "--iters",
        str(iters),
        "--vectors",
        str(vectors),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def describe(rec: dict, dim: int, eigs: np.ndarray | None) -> dict:
    """Seconds, cost ratios, memory and the SLQ measure's λmax, trace (± stderr) and W1 to exact."""
    out = {k: v for k, v in rec.items() if k not in ("nodes", "weights")}
    if "nodes" in rec:
        nodes, weights = np.array(rec["nodes"]), np.array(rec["weights"])
        weights = weights / weights.sum(axis=1, keepdims=True)
        per_vector = dim * (weights * nodes).sum(axis=1)
        out.update(
            lambda_max=float(nodes.max()),
            trace=float(per_vector.mean()),
            trace_stderr=float(per_vector.std(ddof=1) / math.sqrt(len(per_vector)))
            if len(per_vector) > 1
            else float("nan"),
        )
        if eigs is not None:
            out["w1"] = w1_distance(eigs, nodes, weights)
    return out


def _git_version() -> str:
    """The repository's commit, with "+dirty" when the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "landscape"], cwd=root, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--width", type=int, default=32, help="hidden width of the MLP (default 32)")
    p.add_argument("--depth", type=int, default=3, help="hidden layers of the MLP (default 3)")
    p.add_argument("--iters", type=int, default=80, help="Lanczos iterations per vector (default 80)")
    p.add_argument(
        "--vectors", type=int, nargs="+", default=[4, 8], help="SLQ vector counts, each run by every tool (default 4 8)"
    )
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every child (default 2: the cores)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of all measurements; medians reported (default 1)")
    p.add_argument("--no-exact", action="store_true", help="skip the exact spectrum (needed above ~10k params)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--problem", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.problem, a.iters, a.vectors[0], a.threads)))
        return
    tools = [t for t in a.tools.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        p.error(f"unknown tools: {', '.join(unknown)}")
    torch.set_num_threads(a.threads)
    problem = build_problem(a.width, a.depth)
    model, X, y = load_problem(problem)
    dim = sum(q.numel() for q in model.parameters())
    name = f"mlp{a.width}x{a.depth}"
    head = {
        "problem": name,
        "params": dim,
        "n": len(X),
        "batches": f"{len(X) // BATCH}x{BATCH}",
        "iters": a.iters,
        "threads": a.threads,
        "torch": torch.__version__,
        "landscape_commit": _git_version(),
        "load_avg": os.getloadavg(),
    }
    emit(**head, what="setup")
    eigs = None
    if not a.no_exact:
        eigs, te = exact_cached(problem)
        emit(
            problem=name,
            what="exact eigvalsh (float64)",
            seconds=te,
            lambda_max=float(eigs.max()),
            lambda_min=float(eigs.min()),
            trace=float(eigs.sum()),
            n_negative=int((eigs < 0).sum()),
            frac_near_zero=float(np.mean(np.abs(eigs) < 1e-3 * np.abs(eigs).max())),
        )
    results: dict[tuple[str, int], list[dict]] = {}
    for r in range(a.repeat):
        for k in a.vectors:
            round_recs = {}
            for tool in tools:
                rec = describe(run_child(tool, problem, a.iters, k, a.threads), dim, eigs)
                round_recs[tool] = rec
                emit(problem=name, tool=tool, vectors=k, run=r, load_avg=os.getloadavg()[0], **rec)
            ref = round_recs.get("pyhessian-loader", {})
            for tool, rec in round_recs.items():
                if "seconds" in rec and "seconds" in ref:
                    rec["speedup_vs_pyhessian_loader"] = ref["seconds"] / rec["seconds"]
                    rec["speedup_vs_pyhessian_loader_cpu"] = ref["cpu_seconds"] / rec["cpu_seconds"]
                results.setdefault((tool, k), []).append(rec)
            speedups = {
                t: round(x["speedup_vs_pyhessian_loader"], 3)
                for t, x in round_recs.items()
                if "speedup_vs_pyhessian_loader" in x
            }
            if speedups:
                emit(problem=name, what="speedup vs pyhessian-loader (wall)", vectors=k, run=r, **speedups)
    if a.repeat < 2:
        return
    for (tool, k), recs in results.items():
        ok = [x for x in recs if "error" not in x]
        if not ok:
            continue
        keys = sorted(
            {key for x in ok for key, v in x.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        )
        med = {key: statistics.median(x[key] for x in ok if key in x) for key in keys}
        emit(problem=name, tool=tool, vectors=k, what="median", runs=len(ok), **med)


if __name__ == "__main__":
    main()
