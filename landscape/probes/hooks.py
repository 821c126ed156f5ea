"""`probe(model, ...)`: a context manager that hooks a model's blocks and turns what passes into records.

    with probe(model, metrics=("grad_norm", "stream"), step=100) as p:
        loss_fn(model(X), y).backward()
    p.records          # [{"step": 100, "block": "blocks.3", "metric": "grad_ratio", "value": 0.98}, ...]

Guarantees: every hook (module hooks and the tensor hooks on block inputs/outputs) is removed on
exit, also when the body raises; hooks return None, so outputs and gradients are untouched; the
probe never calls backward, never creates `.grad`, never retains a graph, and never writes to the
model's parameters or buffers. Metrics:

- "grad_norm": ‖∂L/∂x_l‖, ‖∂L/∂x_{l+1}‖, r_l (`grad_norm`); needs a backward inside the block.
- "stream": docs/methods.md §B.3 statistics per site (`stream`); `reduce` = "feature" | "global".
- "singularity": docs/methods.md §A.2 unit statistics of each block's `units` module (`singularity`).
- "jacobian": (σ_max, σ_min) of each block's Jacobian on the block's actual input (`jacobian`),
  computed during the forward pass; over several passes the max of σ_max and min of σ_min.

Everything seen inside one `with` is aggregated: norms as over one concatenated batch, means over
all vectors / samples seen. Tensors are kept by reference (detached) and reduced in batches, all
sites of one shape in one stacked computation: activations when the model's forward returns,
gradients when the next forward starts, and everything at `records` and at exit. Branch outputs
of third-party blocks are copied when captured, since such blocks may add the shortcut into them
in place; a kept tensor that is modified in place before it is reduced raises `LandscapeError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.probes.blocks import Block, Site, find_blocks
from landscape.probes.grad_norm import GradNormCollector, tensors_in
from landscape.probes.jacobian import block_jacobian_extremes
from landscape.probes.options import ProbeOptions
from landscape.probes.records import make_record, to_csv, to_json
from landscape.probes.singularity import SingularityAccumulator, units_matrix, weight_stats
from landscape.probes.stream import STREAM_METRICS, stream_dims, sums_from_products, vector_products

METRICS = ("grad_norm", "stream", "singularity", "jacobian")


def _first_tensor(obj) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    ts = tensors_in(obj)
    return ts[0] if ts else None


class Probe:
    """Hooks on a model's blocks that turn what passes into records; see the module docstring.

    Build it with `probe(...)`, which also takes `find_blocks`' keywords and the `ProbeOptions` fields.

    Args:
        model: the model.
        blocks: None (recognise), qualified names / glob patterns, or `Block`s from `find_blocks`.
        metrics: a subset of `METRICS`.
        step: the step stored in every record.
        options: how the metrics are computed (default `ProbeOptions()`).
    """

    def __init__(self, model: nn.Module, blocks: str | Sequence | None = None,
                 metrics: Sequence[str] = ("grad_norm", "stream"), *, step: int | None = None,
                 options: ProbeOptions | None = None):
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise LandscapeError(f"unknown probe metrics {unknown or metrics!r}; known: {', '.join(METRICS)}")
        self.model, self.metrics, self.step = model, metrics, step
        self.options = ProbeOptions() if options is None else options
        self.blocks: list[Block] = find_blocks(model, blocks)
        self.sites: list[tuple[int, Site]] = [(i, s) for i, b in enumerate(self.blocks) for s in b.sites]
        self.unit_blocks = [i for i, b in enumerate(self.blocks) if b.units]
        self._grad_on, self._stream_on = "grad_norm" in metrics, "stream" in metrics
        self._units_on, self._jac_on = "singularity" in metrics, "jacobian" in metrics
        if self._stream_on and not self.sites:
            names = ", ".join(b.name for b in self.blocks[:3]) + (", ..." if len(self.blocks) > 3 else "")
            raise LandscapeError(f"no stream sites in the probed blocks ({names}: structure not recognised); name "
                                 "the update's module with branch= and where its stream comes from with stream=")
        if self._units_on and not self.unit_blocks:
            raise LandscapeError("no unit activations in the probed blocks: name their module with units=")
        self._connect_dims = [getattr(self.blocks[i].get(s.connect), "reduce_dims", None) if s.connect else None
                              for i, s in self.sites]
        self._third_party: list[list[int]] = [[] for _ in self.blocks]
        for k, (i, site) in enumerate(self.sites):
            if self._stream_on and site.connect is None:
                self._third_party[i].append(k)
        self._dims: dict[tuple[int, int], tuple[int, ...]] = {}
        self._handles: list = []
        self._attached = False
        self._paused = False
        self.reset(step)

    def reset(self, step: int | None = None) -> None:
        """Forget everything measured so far.

        Args:
            step: the step of the next records.
        """
        self.step = step
        self.grad_scale = 1.0
        self._grad = GradNormCollector(len(self.blocks))
        self._captured: dict[tuple[int, str], tuple[Tensor, int]] = {}
        self._pending_stream: list[tuple[int, Tensor, Tensor, Tensor]] = []
        self._stream_acc: Tensor | None = None
        self._stream_count = [0] * len(self.sites)
        self._pending_units: list[tuple[int, Tensor, int]] = []
        self._units = SingularityAccumulator()
        self._jac: dict[int, list[float]] = {}

    # ---- hooks --------------------------------------------------------------------------------
    def _hook(self, module: nn.Module, kind: str, fn, **kw) -> None:
        register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
        self._handles.append(register(fn, **kw))

    def attach(self) -> Probe:
        """Register the hooks (done by `with`).

        Returns:
            This probe.
        """
        if self._attached:
            raise LandscapeError("this probe is already attached; use one `with probe(...)` at a time")
        self._attached = True
        try:
            self._register()
        except BaseException:
            self.detach()
            raise
        return self

    def _register(self) -> None:
        self._hook(self.model, "pre", self._on_model_start)
        if self._stream_on or self._units_on:
            self._hook(self.model, "post", self._on_model_end)
        for i, block in enumerate(self.blocks):
            if self._jac_on:
                self._hook(block.module, "post", partial(self._on_block_kw, i), with_kwargs=True)
            elif self._grad_on or self._third_party[i]:
                self._hook(block.module, "post", partial(self._on_block, i))
        for k, (i, site) in enumerate(self.sites if self._stream_on else ()):
            get = self.blocks[i].get
            if site.connect is not None:
                self._hook(get(site.connect), "pre", partial(self._on_connect, k), with_kwargs=True)
                continue
            self._hook(get(site.branch), "post", partial(self._capture, (k, "f"), True))
            if site.stream == "input":
                self._hook(self.blocks[i].module, "pre", partial(self._capture_input, (k, "x")))
            elif site.stream.endswith(":in"):
                self._hook(get(site.stream), "pre", partial(self._capture_input, (k, "x")))
            else:
                self._hook(get(site.stream), "post", partial(self._capture, (k, "x"), False))
        for i in self.unit_blocks if self._units_on else ():
            self._hook(self.blocks[i].get(self.blocks[i].units), "post", partial(self._on_units, i))

    def detach(self) -> None:
        """Remove every hook this probe registered (done on exit, also after an exception)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._grad.remove()
        self._captured.clear()
        self._attached = False

    def __enter__(self) -> Probe:
        return self.attach()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.detach()
            if exc_type is not None:
                self._pending_stream.clear()
                self._pending_units.clear()

    def _on_model_start(self, module, args) -> None:
        if not self._paused:
            self.flush()
            self._grad.new_pass()

    def _on_model_end(self, module, args, output) -> None:
        if not self._paused:  # reduce while the activations are still in cache
            self._flush_activations()

    def _on_connect(self, k: int, module, args, kwargs) -> None:
        if self._paused:
            return
        x = args[0] if args else kwargs.get("x")
        f = args[1] if len(args) > 1 else kwargs.get("f")
        if isinstance(x, Tensor) and isinstance(f, Tensor) and x.shape == f.shape:
            self._add_pair(k, x, f)

    def _add_pair(self, k: int, x: Tensor, f: Tensor) -> None:
        """The per-vector products of one (stream, update) pair; the rest waits for `flush`."""
        dims = self._dims.get((k, x.dim()))
        if dims is None:
            dims = self._dims[k, x.dim()] = stream_dims(x, self.options.reduce, self._connect_dims[k])
        self._pending_stream.append((k, *vector_products(x.detach(), f.detach(), dims)))

    def _capture(self, key: tuple[int, str], copy: bool, module, args, output) -> None:
        t = _first_tensor(output)
        if not self._paused and t is not None:
            self._captured[key] = (t.detach().clone() if copy else t.detach(), t._version)

    def _capture_input(self, key: tuple[int, str], module, args) -> None:
        if not self._paused and args and isinstance(args[0], Tensor):
            self._captured[key] = (args[0].detach(), args[0]._version)

    def _on_units(self, i: int, module, args, output) -> None:
        t = _first_tensor(output)
        if not self._paused and t is not None:
            self._pending_units.append((i, t.detach(), t._version))

    def _on_block(self, i: int, module, args, output) -> None:
        if self._paused:
            return
        if self._grad_on:
            self._grad.watch(i, args[0] if args else None, output)
        if self._third_party[i]:
            self._pair_sites(i)

    def _on_block_kw(self, i: int, module, args, kwargs, output) -> None:
        self._on_block(i, module, args, output)
        x = args[0] if args else None
        if self._paused or not isinstance(x, Tensor):
            return
        self._paused = True
        try:
            smax, smin = block_jacobian_extremes(module, x, *args[1:], steps=self.options.jacobian_steps,
                                                 seed=self.options.seed, **kwargs)
        finally:
            self._paused = False
        old = self._jac.get(i)
        self._jac[i] = [smax, smin] if old is None else [max(old[0], smax), min(old[1], smin)]

    def _pair_sites(self, i: int) -> None:
        """Pair each third-party site's captured (stream, update) at the end of its block's forward."""
        for k in self._third_party[i]:
            site = self.sites[k][1]
            f, _ = self._captured.pop((k, "f"), (None, 0))
            s, version = self._captured.pop((k, "x"), (None, 0))
            if f is None and s is None:
                continue
            label = self.blocks[i].site_label(site)
            if f is None or s is None:
                missing = "update" if f is None else "stream"
                raise LandscapeError(f"site {label}: the {missing} was not seen during the block's forward")
            if s.shape != f.shape:
                raise LandscapeError(f"site {label}: stream {tuple(s.shape)} and update {tuple(f.shape)} "
                                     "differ in shape; check branch= / stream=")
            self._check_version(s, version, f"the stream of site {label}")
            self._add_pair(k, s, f)

    # ---- reduction ----------------------------------------------------------------------------
    @staticmethod
    def _check_version(t: Tensor, version: int, what: str) -> None:
        if t._version != version:
            raise LandscapeError(f"{what} was modified in place before the probe read it; "
                                 "probe a module whose output is not overwritten")

    def flush(self) -> None:
        """Reduce everything captured so far into the accumulators (stacked by shape)."""
        self._grad.flush()
        self._flush_activations()

    @torch.no_grad()
    def _flush_activations(self) -> None:
        groups: dict[tuple, list[tuple[int, Tensor, Tensor, Tensor]]] = {}
        for item in self._pending_stream:
            dot = item[1]
            groups.setdefault((dot.numel(), dot.dtype, dot.device), []).append(item)
        self._pending_stream.clear()
        for (count, _, _), items in groups.items():
            products = torch.stack([t for item in items for t in item[1:]]).view(len(items), 3, count)
            sums = sums_from_products(products, self.options.eps)
            idx = [item[0] for item in items]
            if self._stream_acc is None:
                self._stream_acc = sums.new_zeros(len(self.sites), len(STREAM_METRICS))
            self._stream_acc.index_add_(0, torch.tensor(idx, device=self._stream_acc.device),
                                        sums.to(self._stream_acc.device))
            for k in idx:
                self._stream_count[k] += count
        units: dict[tuple, list[tuple[int, Tensor]]] = {}
        for i, z, version in self._pending_units:
            self._check_version(z, version, f"the units of block {self.blocks[i].name}")
            z = units_matrix(z)
            units.setdefault((tuple(z.shape), z.dtype, z.device), []).append((i, z))
        self._pending_units.clear()
        for items in units.values():
            self._units.add([i for i, _ in items], torch.stack([z for _, z in items]))

    # ---- results ------------------------------------------------------------------------------
    @property
    def records(self) -> list[dict]:
        """Records of everything seen so far: {step, block, metric, value} dicts."""
        self.flush()
        out: list[dict] = []
        rec = partial(make_record, self.step)
        if self._grad_on:
            norms = self._grad.norms(self.grad_scale).tolist()
            for i, block in enumerate(self.blocks):
                seen_in, seen_out = self._grad.seen[2 * i], self._grad.seen[2 * i + 1]
                if seen_in:
                    out.append(rec(block.name, "grad_norm_in", norms[i][0]))
                if seen_out:
                    out.append(rec(block.name, "grad_norm_out", norms[i][1]))
                if seen_in and seen_out:
                    ratio = norms[i][0] / norms[i][1] if norms[i][1] > 0 else float("nan")
                    out.append(rec(block.name, "grad_ratio", ratio))
        if self._stream_on:
            means = self._stream_acc.tolist() if self._stream_acc is not None else []
            for k, (i, site) in enumerate(self.sites):
                n, label = self._stream_count[k], self.blocks[i].site_label(site)
                if n:
                    out += [rec(label, m, v / n) for m, v in zip(STREAM_METRICS, means[k])]
        if self._units_on:
            o = self.options
            acts = self._units.compute(o.dead_tol, o.threshold, o.small_sv)
            with_w = [i for i in self.unit_blocks if self.blocks[i].weights]
            layers = [self.blocks[i].get(self.blocks[i].weights) for i in with_w]
            wstats = dict(zip(with_w, weight_stats(layers, o.threshold)))
            for i in self.unit_blocks:
                for m, v in {**acts.get(i, {}), **wstats.get(i, {})}.items():
                    out.append(rec(self.blocks[i].name, m, v))
        if self._jac_on:
            for i, (smax, smin) in sorted(self._jac.items()):
                out += [rec(self.blocks[i].name, "jac_sigma_max", smax),
                        rec(self.blocks[i].name, "jac_sigma_min", smin)]
        return out

    def to_csv(self, path: str | Path) -> Path:
        """Write `records` as CSV.

        Args:
            path: the file.

        Returns:
            The path written.
        """
        return to_csv(self.records, path)

    def to_json(self, path: str | Path, lines: bool = False) -> Path:
        """Write `records` as JSON.

        Args:
            path: the file.
            lines: JSON lines (one record per line) instead of one array.

        Returns:
            The path written.
        """
        return to_json(self.records, path, lines)


def probe(model: nn.Module, blocks: str | Sequence | None = None,
          metrics: Sequence[str] = ("grad_norm", "stream"), *, step: int | None = None, branch: str | None = None,
          stream: str | Sequence[str] = "input", units: str | None = None, weights: str | None = None,
          options: ProbeOptions | None = None, **fields) -> Probe:
    """A `Probe` on `model`'s blocks, to use as `with probe(model, ...) as p:`.

    Args:
        model: the model.
        blocks: None (recognise), qualified names / glob patterns, or `Block`s.
        metrics: a subset of `METRICS`.
        step: the step stored in every record.
        branch: see `find_blocks`.
        stream: see `find_blocks`.
        units: see `find_blocks`.
        weights: see `find_blocks`.
        options: a `ProbeOptions`; or give its fields as keywords (reduce, eps, dead_tol, threshold,
            small_sv, jacobian_steps, seed).
        **fields: `ProbeOptions` fields (not together with `options`).

    Returns:
        The `Probe` (not yet attached: `with` attaches it).
    """
    if options is not None and fields:
        raise LandscapeError(f"pass either options= or its fields, not both ({', '.join(fields)})")
    unknown = [k for k in fields if k not in {f.name for f in dataclasses.fields(ProbeOptions)}]
    if unknown:
        raise LandscapeError(f"unknown probe option(s) {unknown}; options: "
                             f"{', '.join(f.name for f in dataclasses.fields(ProbeOptions))}, branch, stream, units, "
                             "weights, step")
    found = find_blocks(model, blocks, branch=branch, stream=stream, units=units, weights=weights)
    return Probe(model, found, metrics, step=step, options=options or ProbeOptions(**fields))
