"""Curvature of a real language model on the CPU: GPT-2-small (12 × 768, 124,439,808 parameters) and a Llama-style
config, trained briefly on byte tokens of the Python installation's own sources (`landscape.text`).

Subcommands (one JSON line per measurement on stdout, appended to --log when given):

    train     a minimal AdamW loop (warm-up then constant lr) on `text.token_windows(split="train")`, saving
              the model with `save_pretrained` (safetensors) to --model-dir every --save-every steps
    build     HessianOperator construction: seconds and peak RSS, against one gradient of the same batch
    graph     the reference: one hand-written double-backward graph (torch.autograd.grad with create_graph=True
              under the math attention kernel) and one hand-written HVP through it, seconds and peak RSS
    products  the HVP/gradient time ratio of each backend (double_backward, func, finite_difference; k = 1, 2)
    spectrum  λmax ± its data stderr, the top-5 with residuals, an SLQ density (--iters × --vectors)
    peers     hessian-eigenthings and curvlinops on the same model, data and loss (their λmax, time, RSS)
    ggn       GGNOperator products with the analytic chunked cross-entropy output Hessian or (--generic) the
              generic second-order path, at the full vocabulary: seconds and peak RSS of one k = 2 matmat

The measured data is --batch × --seq tokens of the test split (seed 0), the loss the model's own (loss_fn=None:
the shifted causal-LM cross-entropy over every token). Peak memory is `ru_maxrss` of the process (each
subcommand is meant to run in its own process); "rss_before" is the resident size just before the measured
step.

    python benchmarks/lm_scale.py train --arch gpt2 --steps 100 --model-dir /tmp/gpt2s
    python benchmarks/lm_scale.py build --model-dir /tmp/gpt2s --batch 2 --seq 64
    python benchmarks/lm_scale.py spectrum --model-dir /tmp/gpt2s --batch 4 --seq 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ARCHS = {
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12},          # GPT-2-small, vocabulary 50,257
    "llama": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
              "intermediate_size": 1376, "vocab_size": 32000, "max_position_embeddings": 512},
}


def rss_gb() -> float:
    """Resident memory now (GB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_gb() -> float:
    """Peak resident memory of the process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def emit(record: dict, log: str | None) -> None:
    line = json.dumps(record, default=str)
    print(line, flush=True)
    if log:
        with open(log, "a") as f:
            f.write(line + "\n")


def machine() -> dict:
    return {"machine": platform.node(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_1min": os.getloadavg()[0], "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def build_model(args):
    import transformers

    if args.model_dir and Path(args.model_dir, "config.json").exists():
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model_dir, local_files_only=True)
        return model.float().eval()
    torch.manual_seed(args.seed)
    if args.arch == "gpt2":
        cfg = transformers.GPT2Config(**{**ARCHS["gpt2"], **({"n_layer": args.layers} if args.layers else {})})
        return transformers.GPT2LMHeadModel(cfg).eval()
    cfg = transformers.LlamaConfig(**{**ARCHS["llama"], **({"num_hidden_layers": args.layers} if args.layers else {})})
    return transformers.LlamaForCausalLM(cfg).eval()


def batches(args) -> list[dict]:
    """The measured data: --batch × --seq test tokens, one batch (--random-tokens: uniform ids below 256, seed
    0, so that the script also measures a checkout without `landscape.text`, e.g. the code before a change)."""
    if args.random_tokens:
        gen = torch.Generator().manual_seed(0)
        return [{"input_ids": torch.randint(0, 256, (args.batch, args.seq), generator=gen)}]
    from landscape import text

    return [{"input_ids": text.token_windows(args.batch, args.seq, split="test", seed=0)}]


def gradient_seconds(model, data, reps: int = 2) -> float:
    """Median wall time of one gradient of the batch-mean loss (after a warm-up)."""
    from landscape.objective import Objective

    obj = Objective(model, None, data)
    batch = obj.prepare(next(iter(obj.data)))
    params = [p for p in model.parameters() if p.requires_grad]
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        torch.autograd.grad(obj.loss(batch), params)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def cmd_train(args) -> None:
    from landscape import text

    model = build_model(args).train()
    info = {**machine(), "measure": "train", "arch": args.arch, "params": sum(p.numel() for p in model.parameters()),
            "text": text.corpus_info("train"), "batch": args.batch, "seq": args.seq, "lr": args.lr}
    emit({**info, "step": 0}, args.log)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    data = text.token_windows(args.steps * args.batch, args.seq, split="train", seed=args.seed)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / args.warmup)
        ids = data[(step - 1) * args.batch: step * args.batch]
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        record = {"measure": "train", "step": step, "loss": float(loss.detach()),
                  "seconds": time.perf_counter() - t0}
        if step % args.save_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                test = batches(args)[0]["input_ids"]
                record["test_loss"] = float(model(input_ids=test, labels=test).loss)
            model.save_pretrained(args.model_dir)
            model.train()
        emit(record, args.log)


def built(args, backend: str, **kw):
    """(model, data, operator, construction seconds, resident GB before it)."""
    from landscape.hessian import HessianOperator

    model, data = build_model(args), batches(args)
    before = rss_gb()
    t0 = time.perf_counter()
    op = HessianOperator(model, None, data, backend=backend, **kw)
    return model, data, op, time.perf_counter() - t0, before


def cmd_build(args) -> None:
    model, data, op, seconds, before = built(args, args.backend)
    peak = peak_gb()
    grad_s = gradient_seconds(model, data)
    emit({**machine(), "measure": "build", "params": op.dim, "batch": args.batch, "seq": args.seq,
          "backend_asked": args.backend, "seconds": seconds, "gradient_seconds": grad_s,
          "in_gradients": seconds / grad_s, "rss_before_gb": before, "peak_rss_gb": peak,
          "rss_growth_gb": peak - before, "info": op.info()}, args.log)


def cmd_graph(args) -> None:
    from landscape.objective import math_attention

    model, data = build_model(args), batches(args)
    ids = data[0]["input_ids"]
    params = [p for p in model.parameters() if p.requires_grad]
    before, t0 = rss_gb(), time.perf_counter()
    with math_attention():
        grads = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, params, create_graph=True)
        t_graph = time.perf_counter() - t0
        peak_graph = peak_gb()
        v = [torch.randn_like(p) for p in params]
        torch.autograd.grad(grads, params, v)
    emit({**machine(), "measure": "graph", "params": sum(p.numel() for p in params), "batch": args.batch,
          "seq": args.seq, "graph_seconds": t_graph, "hvp_seconds": time.perf_counter() - t0,
          "rss_before_gb": before, "peak_graph_rss_gb": peak_graph, "peak_hvp_rss_gb": peak_gb()}, args.log)


def cmd_products(args) -> None:
    base = {**machine(), "measure": "products", "batch": args.batch, "seq": args.seq}
    reference: dict[int, torch.Tensor] = {}  # the first backend's products, which the others are compared with
    for backend in args.backends:
        try:
            model, data, op, build, _ = built(args, backend, cache=True)
            base["gradient_seconds"] = grad_s = gradient_seconds(model, data)
            for k in args.ks:
                V = torch.randn(op.dim, k, generator=torch.Generator().manual_seed(k))
                op.matmat(V)  # warm: the kept graph is made once (cached), then every pass reuses it
                t0 = time.perf_counter()
                HV = op.matmat(V)
                per = (time.perf_counter() - t0) / k
                ref = reference.setdefault(k, HV)
                diff = float((HV.double() - ref.double()).norm() / ref.double().norm())
                emit({**base, "backend": backend, "k": k, "seconds_per_vector": per, "ratio": per / grad_s,
                      "relative_difference_to": [args.backends[0], diff], "build_seconds": build,
                      "peak_rss_gb": peak_gb(), "info": op.info()}, args.log)
            del op
        except Exception as e:  # noqa: BLE001 - a backend that cannot run here is a result, recorded as such
            emit({**base, "backend": backend, "error": f"{type(e).__name__}: {str(e)[:300]}"}, args.log)


def cmd_spectrum(args) -> None:
    from landscape.hessian import Checkpoint, TopK, slq_density

    t0 = time.perf_counter()
    model, data, op, build, before = built(args, args.backend, **({"check_symmetric": False} if args.no_symmetry_check
                                                                  else {}))
    state_file = Path(args.state) if args.state else None
    saved = torch.load(state_file, weights_only=True) if state_file and state_file.exists() else None

    def on_state(state: dict) -> None:
        torch.save(state, state_file.with_suffix(".tmp"))
        state_file.with_suffix(".tmp").replace(state_file)

    def progress(j: int) -> None:
        print(json.dumps({"iteration": j, "seconds": time.perf_counter() - t0, "rss_gb": rss_gb()}),
              file=sys.stderr, flush=True)

    cap = int(args.max_basis_gb * 2**30) if args.max_basis_gb else None
    sd = slq_density(op, iters=args.iters, vectors=args.vectors, seed=0, max_basis_bytes=cap, reorth=args.reorth,
                     top_k=TopK(args.top_k, max_matmats=args.top_matmats, block_size=args.top_block),
                     callback=progress,
                     checkpoint=Checkpoint(saved, on_state if state_file else None, every=10))
    seconds = time.perf_counter() - t0
    summary = sd.summary()
    top = sd.top
    emit({**machine(), "measure": "spectrum", "params": op.dim, "batch": args.batch, "seq": args.seq,
          "iters": args.iters, "vectors": args.vectors, "max_basis_gb": args.max_basis_gb, "reorth_asked": args.reorth,
          "top_block": args.top_block, "symmetry_check": not args.no_symmetry_check,
          "build_seconds": build, "seconds": seconds,
          "products": op.n_products, "rss_before_gb": before, "peak_rss_gb": peak_gb(),
          "lambda_max": summary.get("lambda_max"), "lambda_max_stderr": summary.get("lambda_max_stderr"),
          "top": None if top is None else top.eigenvalues.tolist(),
          "top_residuals": None if top is None else top.residuals.tolist(),
          "lambda_min": summary.get("lambda_min"), "trace": summary.get("trace"),
          "negative_ratio": summary.get("negative_ratio"), "nodes": sd.nodes.tolist(),
          "weights": sd.weights.tolist(), "meta": sd.meta, "info": op.info()}, args.log)


def cmd_peers(args) -> None:
    """Each peer on the same model, tokens and loss: one HVP after a warm-up one (seconds, peak RSS), and with
    --peer-lambda the top eigenvalue by its own solver (--iters products at most for hessian-eigenthings)."""
    model, data = build_model(args), batches(args)
    ids = data[0]["input_ids"]
    base = {**machine(), "measure": "peers", "batch": args.batch, "seq": args.seq}
    for name, make in (("hessian-eigenthings", _eigenthings), ("curvlinops", _curvlinops)):
        try:
            before = rss_gb()
            hvp, top, version = make(model, ids)
            v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(1))
            hvp(v)
            t0 = time.perf_counter()
            hvp(v)
            record = {**base, "peer": name, "version": version, "hvp_seconds": time.perf_counter() - t0,
                      "rss_before_gb": before, "peak_rss_gb": peak_gb()}
            if args.peer_lambda:
                t0 = time.perf_counter()
                record.update(lambda_max=top(args.iters), lambda_seconds=time.perf_counter() - t0)
            emit(record, args.log)
        except Exception as e:  # noqa: BLE001 - a peer that cannot run on this problem is a result
            emit({**base, "peer": name, "error": f"{type(e).__name__}: {str(e)[:300]}"}, args.log)


def cmd_ggn(args) -> None:
    from landscape.hessian import GGNOperator
    from landscape.hessian.operators import ggn

    if args.generic:
        ggn.cross_entropy_hessian = lambda *a: None  # the generic path: the loss differentiated twice
    model, data = build_model(args), batches(args)
    op = GGNOperator(model, None, data, backend=args.backend if args.backend != "auto" else "func", cache=False)
    V = torch.randn(op.dim, 2, generator=torch.Generator().manual_seed(0))
    before, t0 = rss_gb(), time.perf_counter()
    op.matmat(V)
    emit({**machine(), "measure": "ggn", "path": "generic" if args.generic else "analytic", "params": op.dim,
          "batch": args.batch, "seq": args.seq, "vocab": model.config.vocab_size, "backend": op.backend,
          "seconds_k2": time.perf_counter() - t0, "rss_before_gb": before, "peak_rss_gb": peak_gb(),
          "logits_gb": args.batch * args.seq * model.config.vocab_size * 4 / 2**30}, args.log)


class _Logits(torch.nn.Module):
    """input_ids → logits of the shifted positions [B·(T−1), V]: what a generic peer differentiates."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        logits = self.model(input_ids=ids).logits[:, :-1]
        return logits.reshape(-1, logits.shape[-1])


def _eigenthings(model, ids):
    """hessian-eigenthings' own HF path (`hf_lm_loss`: the model's .loss with labels = input_ids), autograd
    HVPs (its default), its Lanczos for the top eigenvalue; attention under the math kernel (double backward).
    Returns (hvp(v), top(iters), version)."""
    import importlib.metadata

    import hessian_eigenthings as he

    from landscape.objective import math_attention

    op = he.HessianOperator(model, [{"input_ids": ids, "labels": ids}], he.hf_lm_loss())

    def hvp(v):
        with math_attention():
            return op.matvec(v)

    def top(iters):
        with math_attention():
            return float(he.lanczos(op, k=1, which="LA", max_iter=iters, seed=0).eigenvalues[0])

    return hvp, top, importlib.metadata.version("hessian-eigenthings")


def _curvlinops(model, ids):
    """curvlinops' HessianLinearOperator of the shifted logits' cross-entropy (its generic model + loss form),
    scipy eigsh for the top eigenvalue. Returns (hvp(v), top(iters), version)."""
    import importlib.metadata

    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    from landscape.objective import math_attention

    wrapped = _Logits(model)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    with math_attention():
        H = HessianLinearOperator(wrapped, torch.nn.CrossEntropyLoss(), params, [(ids, ids[:, 1:].reshape(-1))],
                                  check_deterministic=False)

    def hvp(v):
        with math_attention():
            return H @ v

    def top(iters):
        with math_attention():
            return float(eigsh(H.to_scipy(), k=1, which="LA", tol=1e-3, ncv=min(iters, 20),
                               return_eigenvectors=False)[0])

    return hvp, top, importlib.metadata.version("curvlinops-for-pytorch")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("train", "build", "graph", "products", "spectrum", "peers", "ggn"))
    p.add_argument("--arch", choices=tuple(ARCHS), default="gpt2", help="config when --model-dir holds no model")
    p.add_argument("--model-dir", help="save_pretrained directory (train: written; others: read when present)")
    p.add_argument("--layers", type=int, help="override the config's layer count (a smaller model of the same width)")
    p.add_argument("--generic", action="store_true", help="ggn: the generic output-space path")
    p.add_argument("--random-tokens", action="store_true", help="measure on random ids instead of landscape.text")
    p.add_argument("--peer-lambda", action="store_true", help="peers: also their top eigenvalue (--iters)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log", help="also append the JSON lines to this file")
    p.add_argument("--steps", type=int, default=100, help="train: optimizer steps")
    p.add_argument("--lr", type=float, default=6e-4, help="train: peak learning rate")
    p.add_argument("--warmup", type=int, default=10, help="train: linear warm-up steps")
    p.add_argument("--save-every", type=int, default=25, help="train: save (and test) every N steps")
    p.add_argument("--backend", default="auto", help="build/spectrum: the operator's backend")
    p.add_argument("--backends", nargs="+", default=["double_backward", "func", "finite_difference"])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2], help="products: vectors per matmat")
    p.add_argument("--iters", type=int, default=40, help="spectrum: Lanczos iterations per vector")
    p.add_argument("--vectors", type=int, default=2, help="spectrum: SLQ vectors")
    p.add_argument("--top-k", type=int, default=5, help="spectrum: top eigenvalues")
    p.add_argument("--top-matmats", type=int, default=4, help="spectrum: matmats the top-k refinement may add")
    p.add_argument("--max-basis-gb", type=float, help="spectrum: the Lanczos vectors' memory cap (GiB; default: "
                   "memory.BASIS_SHARE of the free memory)")
    p.add_argument("--reorth", default="auto", choices=("auto", "full", "selective", "none"),
                   help="spectrum: the Lanczos reorthogonalization (slq_density's reorth)")
    p.add_argument("--top-block", type=int, help="spectrum: vectors per matmat of the top-k refinement (block_size)")
    p.add_argument("--no-symmetry-check", action="store_true",
                   help="spectrum: skip the operator's first-pass symmetry check (check_symmetric=False)")
    p.add_argument("--state", help="spectrum: save the Lanczos state here every 10 iterations, resume from it")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    {"train": cmd_train, "build": cmd_build, "graph": cmd_graph, "products": cmd_products, "spectrum": cmd_spectrum,
     "peers": cmd_peers, "ggn": cmd_ggn}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
