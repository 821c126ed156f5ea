"""Bad input: one-line errors (exit 2, no traceback, no file overwritten) for `python -m landscape.train`
and the checkpoint loader, checked case by case and by hypothesis-driven fuzzing.

The fuzzers state the contract directly: any argv parses to a valid config or fails with a
`LandscapeError` / argparse's exit 2; any tiny run ends with exit 0 or 2; any file handed to
`load_checkpoint` (random bytes, truncations, byte flips, foreign or malicious pickles, mutated payloads)
loads or raises `CheckpointError` with a one-line message naming the file, and never runs code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from landscape import train as T
from landscape.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from landscape.cli import run_cli
from landscape.errors import LandscapeError
from landscape.models import build

TINY = ["--n-samples", "40", "--epochs", "1", "--batch-size", "20", "--device", "cpu", "--no-progress",
        "--threads", "1"]
SMALL_FC = ["--model-config", '{"depth": 2, "width": 8}']
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("shared_cache")


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err], err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())} if directory.is_dir() else {}


# ---- bad input, case by case ----

BAD_ARGS = [
    (["--model-config", '{"depth": 2, "width": 8, "in_dim": 30}'], "does not take mnist1d inputs of shape [40]"),
    (["--model-config", '{"depth": 2, "width": 8, "n_classes": 5}'], "returns [2, 5] for 2 samples"),
    (["--model", "vit", "--model-config", '{"preset": "tiny"}'], "does not take mnist1d inputs"),
    (["--n-samples", "0"], "n_samples must be a positive integer"),
    (["--batch-size", "0"], "must be positive"),
    (["--model", "mlp9000"], "unknown model 'mlp9000'"),
    (["--data", "imagenet"], "unknown data set 'imagenet'"),
    (["--probes", "nope"], "unknown probe(s) ['nope']"),
    (["--model-config", '{"connect": "sideways"}'], "unknown connection mode"),
    (["--model-config", '{"depth": 2, "wdith": 8}'], "unknown config key(s) ['wdith']"),
    (["--model-config", '{"width": -3}'], "width must be a positive integer"),
    (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    (["--bf16"], "needs a CUDA device"),
    (["--seed", "-1"], "seed must lie in [0, 2**63)"),
    (["--data-seed", str(2**40)], "data_seed must lie in [0, 2**32)"),
    (["--warmup-epochs", "inf"], "warmup_epochs must be a finite number"),
    (["--momentum", "-1"], "momentum must be ≥ 0"),
    (["--gamma", "0"], "gamma must be positive"),
    (["--bias-reg", "0.1", "--bias-targets", "nothing"], "unknown targets 'nothing'"),
    (["--resume"], "--resume needs --out"),
    (["--lr", "1e30"], "training loss became"),
]


@pytest.mark.parametrize("args,fragment", BAD_ARGS, ids=[a[0][0] + ":" + a[1][:20] for a in BAD_ARGS])
def test_bad_arguments_give_one_line_errors(args, fragment, capsys):
    assert run_cli(T.main, [*TINY, *SMALL_FC, *args]) == 2
    _one_line_error(capsys, fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu(capsys):
    assert run_cli(T.main, [*TINY, *SMALL_FC, "--device", "cuda"]) == 2
    _one_line_error(capsys, "CUDA is not available")


def test_argparse_rejects_unknown_flags_and_choices_with_exit_2(capsys):
    for argv, fragment in ((["--optimizer", "lbfgs"], "argument --optimizer: invalid choice"),
                           (["--learning-rate", "1"], "unrecognized arguments: --learning-rate"),
                           (["--epochs", "two"], "argument --epochs: invalid int value"),
                           (["--model-config", "[1]"], "argument --model-config: must be a JSON object")):
        assert run_cli(T.main, argv) == 2
        _one_line_error(capsys, fragment)                # one line, not argparse's usage text


def _cifar_dir(root: Path, labels: list[int], n_images: int | None = None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = len(labels) if n_images is None else n_images
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": labels}, f)
    return root


@pytest.mark.parametrize("labels,n_images,fragment", [
    ([1, 99, 3], None, "labels must lie in [0, 10), found 99"),
    ([], 0, "split has no samples"),
    ([1, 2], 3, "2 labels for 3 images"),
    (["cat", "dog"], None, "labels must be a list of integers"),
])
def test_bad_image_files_give_one_line_errors(tmp_path, capsys, labels, n_images, fragment):
    root = _cifar_dir(tmp_path / "data", labels, n_images)
    argv = ["--data", "cifar10", "--data-root", str(root), "--epochs", "1", "--device", "cpu", *SMALL_FC,
            "--out", str(tmp_path / "run")]
    assert run_cli(T.main, argv) == 2
    _one_line_error(capsys, fragment)
    assert not (tmp_path / "run").exists()


def test_unwritable_out_is_refused_before_anything_is_written(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for out, fragment in ((blocker / "run", "is not a directory"), (blocker, "exists and is not a directory")):
        assert run_cli(T.main, [*TINY, *SMALL_FC, "--out", str(out)]) == 2
        _one_line_error(capsys, str(out), fragment)
        assert blocker.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_out_without_write_permission(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert run_cli(T.main, [*TINY, *SMALL_FC, "--out", str(locked / "run")]) == 2
        _one_line_error(capsys, "is not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_an_existing_run_is_never_overwritten_by_a_refused_start(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(T.main, [*TINY, *SMALL_FC, "--out", str(run)]) == 0
    before = _snapshot(run)
    for extra, fragment in ((["--epochs", "2"], "pass --resume"),                 # no --resume
                            (["--epochs", "2", "--resume", "--probes", "nope"], "unknown probe"),
                            (["--epochs", "2", "--resume", "--lr", "0.5"], "different configuration"),
                            (["--epochs", "2", "--resume", "--model-config", '{"depth": 3, "width": 8}'],
                             "different configuration")):
        assert run_cli(T.main, [*TINY, *SMALL_FC, "--out", str(run), *extra]) == 2
        _one_line_error(capsys, fragment)
        assert _snapshot(run) == before


def test_models_without_trainable_parameters_are_refused(monkeypatch):
    class Frozen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(40, 10), requires_grad=False)

        def forward(self, x):
            return x @ self.w

    class NoParams(torch.nn.Module):
        def forward(self, x):
            return x[:, :10]

    import landscape.models

    for module in (Frozen(), NoParams()):
        monkeypatch.setattr(landscape.models, "build", lambda name, config, m=module: m)
        with pytest.raises(LandscapeError, match="no trainable parameters"):
            T.train({"n_samples": 40, "epochs": 1, "device": "cpu", "progress": False})


def _checkpoint(path: Path, **model_cfg) -> Path:
    model = build("fc", **{"kind": "residual", "depth": 2, "width": 8, "in_dim": 40, "n_classes": 10, **model_cfg})
    return save_checkpoint(path, model, meta={"data": {"name": "mnist1d"}, "epoch": 1})


def test_non_finite_weights_are_refused_unless_allowed(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(T.main, [*TINY, *SMALL_FC, "--out", str(run)]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model_state"]["head.bias"][3] = float("nan")
    state["model_state"]["blocks.0.branch.linear.weight"][0, 0] = float("inf")
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(run / "checkpoint.pt")
    msg = str(e.value)
    assert "\n" not in msg and "non-finite weights" in msg and "head.bias: 1 of 10" in msg and str(run) in msg
    model, _ = load_checkpoint(run / "checkpoint.pt", allow_nonfinite=True)
    assert torch.isnan(model.head.bias[3])
    before = _snapshot(run)
    assert run_cli(T.main, [*TINY, *SMALL_FC, "--epochs", "2", "--out", str(run), "--resume"]) == 2
    _one_line_error(capsys, "cannot resume from it", "non-finite")
    assert _snapshot(run) == before


def test_checkpoints_not_written_by_train_cannot_be_resumed(tmp_path, capsys):
    run = tmp_path / "run"
    _checkpoint(run / "checkpoint.pt", depth=2, width=8, kind="plain", seed=0)
    assert run_cli(T.main, [*TINY, *SMALL_FC, "--out", str(run), "--resume"]) == 2
    _one_line_error(capsys, "cannot resume from it", "not written by landscape.train")


# ---- fuzzing the command line ----

_NUMBERS = st.one_of(st.integers(-3, 5), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from(["1e-3", "0.5", "nan", "-inf", "1e400", "0x10", "", " ", "1,2", "two"]))
_JSON = st.one_of(st.sampled_from(['{}', '{"depth": 2, "width": 8}', '[1]', '{"depth": "x"}', 'null', '{',
                                   '{"kind": "hyper", "depth": 2, "width": 4}', '{"width": 1e9}']),
                  st.dictionaries(st.sampled_from(["depth", "width", "kind", "init", "gain", "connect", "zz"]),
                                  st.one_of(st.integers(-2, 3), st.text(max_size=5), st.floats(),
                                            st.none())).map(json.dumps))


def _flag_values():
    parser = T.build_parser()
    flags = [a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"]
    value = st.one_of(_NUMBERS.map(str), _JSON, st.text(max_size=8), st.sampled_from(T.OPTIMIZERS + T.SCHEDULES))
    return st.lists(st.tuples(st.sampled_from([*flags, "--bogus", "--no-resume", "-x"]),
                              st.one_of(st.none(), value)), max_size=6)


def _argv(pairs) -> list[str]:
    return [s for flag, value in pairs for s in ([flag] if value is None else [flag, value])]


@FUZZ
@given(pairs=_flag_values())
def test_fuzz_any_argv_parses_to_a_valid_config_or_exits_2(pairs, tmp_path):
    argv = [a for a in _argv(pairs) if a != "--config"] or ["--epochs", "1"]
    try:
        cfg = T.config_from_args(argv)
    except LandscapeError as e:
        assert str(e) and "\n" not in str(e).strip()
        return
    again = T.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict(), allow_nan=False)))
    assert again == cfg                                  # what a checkpoint stores rebuilds the same run


_ANY = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                 st.lists(st.integers(-2, 5), max_size=3), st.lists(st.text(max_size=3), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@FUZZ
@given(d=st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(T.TrainConfig)] + ["nope"]), _ANY,
                         max_size=5))
def test_fuzz_config_tables_validate_or_fail_in_one_line(d):
    """What a TOML file may hold: any key, any type."""
    try:
        cfg = T.TrainConfig.from_dict(d)
    except LandscapeError as e:
        assert "\n" not in str(e).strip()
        return
    json.dumps(cfg.to_dict(), allow_nan=False)
    for key in ("lr", "momentum", "gamma", "warmup_epochs"):
        assert isinstance(getattr(cfg, key), float) and math.isfinite(getattr(cfg, key))


_RUN_FLAGS = st.lists(st.one_of(
    st.tuples(st.just("--optimizer"), st.sampled_from(T.OPTIMIZERS)),
    st.tuples(st.just("--schedule"), st.sampled_from(T.SCHEDULES)),
    st.tuples(st.sampled_from(["--lr", "--momentum", "--weight-decay", "--warmup-epochs", "--gamma", "--clip-grad",
                               "--label-smoothing", "--bias-reg", "--bias-target", "--procrustes-p"]),
              _NUMBERS.map(str)),
    st.tuples(st.sampled_from(["--seed", "--eval-batch-size", "--probe-every"]), st.integers(-2, 2**64).map(str)),
    st.tuples(st.just("--milestones"), st.sampled_from(["1", "0", "1,2", "-1", "x"])),
    st.tuples(st.just("--model"), st.sampled_from(["fc", "nope", "resnetv2"])),
    st.tuples(st.just("--model-config"), _JSON),
    st.tuples(st.sampled_from(["--augment", "--no-augment", "--bf16", "--download"]), st.none()),
    st.tuples(st.just("--device"), st.sampled_from(["cpu", "auto", "cuda:x", "cpu:1", "meta"])),
), max_size=5)


@FUZZ
@given(pairs=_RUN_FLAGS)
def test_fuzz_tiny_runs_end_with_exit_0_or_2(pairs, capsys):
    """Whole runs (1 epoch of 40 samples, sizes forced after the fuzzed flags): never another exception."""
    argv = [*SMALL_FC, *_argv(pairs), *TINY]
    capsys.readouterr()                                  # capsys spans all examples: start empty
    rc = run_cli(T.main, argv)
    err = capsys.readouterr().err.strip()
    assert rc in (0, 2), err
    if rc == 2:
        assert err.startswith("error: ") and err.splitlines() == [err], err


# ---- fuzzing the checkpoint loader ----

@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, bytes]:
    path = _checkpoint(tmp_path_factory.mktemp("good") / "good.pt")
    return path, path.read_bytes()


def _load_or_checkpoint_error(path: Path):
    try:
        model, meta = load_checkpoint(path)
    except CheckpointError as e:
        msg = str(e)
        assert "\n" not in msg and str(path) in msg, msg
        return None
    assert isinstance(meta, dict) and all(torch.isfinite(p).all() for p in model.parameters())
    return model


@FUZZ
@given(blob=st.one_of(st.binary(max_size=600),
                      st.tuples(st.sampled_from([b"PK\x03\x04", b"\x80\x02", b"\x80\x05", b"\x93NUMPY"]),
                                st.binary(max_size=300)).map(b"".join)))
def test_fuzz_random_bytes_are_refused(blob, tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(blob)
    assert _load_or_checkpoint_error(path) is None


@FUZZ
@given(data=st.data())
def test_fuzz_truncated_and_flipped_checkpoints(data, good, tmp_path):
    _, blob = good
    path = tmp_path / "damaged.pt"
    cut = data.draw(st.integers(0, len(blob) - 1), label="truncate at")
    path.write_bytes(blob[:cut])
    assert _load_or_checkpoint_error(path) is None
    at = data.draw(st.integers(0, len(blob) - 1), label="flip at")
    path.write_bytes(blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1:])
    _load_or_checkpoint_error(path)                      # a flip inside the weights may still load


class _Evil:
    """Unpickling this object would create `path` (it must never be unpickled)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


_PLAIN = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                                st.binary(max_size=5)),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                              st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=8)


@FUZZ
@given(obj=_PLAIN, evil=st.booleans(), protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), container=st.booleans())
def test_fuzz_foreign_and_malicious_pickles_never_run(obj, evil, protocol, container, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "foreign.pt"
    payload = {"format": "landscape-checkpoint", "version": 1, "data": obj,
               "x": _Evil(marker) if evil else None}
    if container:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
    assert _load_or_checkpoint_error(path) is None
    assert not marker.exists()


def _paths(obj, prefix=()):
    """Every (path, value) inside nested dicts/lists of a payload."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


_JUNK = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=4), st.lists(st.integers(), max_size=2),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                  st.tuples(st.lists(st.integers(0, 4), max_size=3),
                            st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool]))
                  .map(lambda t: torch.ones(t[0], dtype=t[1])),
                  st.just(torch.full((3,), float("nan"))), st.just("DELETE"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, module_cache) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDSCAPE_CACHE", module_cache)
        assert run_cli(T.main, [*TINY, *SMALL_FC, "--out", str(run)]) == 0
    return run


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")      # torch, indexing fuzzed junk
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_payloads_load_resume_or_fail_in_one_line(data, trained, tmp_path):
    """Wrong tensor shapes, dtypes and types anywhere in a real training checkpoint: `load_checkpoint` and
    `train --resume` either work or give a one-line `LandscapeError`."""
    payload = torch.load(trained / "checkpoint.pt", weights_only=True)
    spots = [p for p, _ in _paths(payload) if p]
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        spot = data.draw(st.sampled_from(spots), label="where")
        junk = data.draw(_JUNK, label="junk")
        parent = payload
        try:
            for key in spot[:-1]:
                parent = parent[key]
        except (KeyError, IndexError, TypeError):
            continue                                     # an earlier mutation removed this spot
        if not isinstance(parent, (dict, list)):
            continue                                     # ... or replaced its container (by a tensor, say)
        try:
            if isinstance(junk, str) and junk == "DELETE":
                del parent[spot[-1]]
            else:
                parent[spot[-1]] = junk
        except (KeyError, IndexError):
            continue
    run = tmp_path / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    torch.save(payload, run / "checkpoint.pt")
    _load_or_checkpoint_error(run / "checkpoint.pt")
    try:
        T.train({"n_samples": 40, "epochs": 2, "batch_size": 20, "device": "cpu", "progress": False,
                 "model_config": {"depth": 2, "width": 8}, "out": str(run), "resume": True})
    except LandscapeError as e:
        assert "\n" not in str(e)


def _set(payload: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        payload = payload[key]
    payload[path[-1]] = value


_NAN3 = torch.full((3,), float("nan"))


@pytest.mark.parametrize("changes, fragment", [
    ([(("optimizer_state", "state"), _NAN3)], "not a table of state and param_groups"),
    ([(("optimizer_state", "state", 0), _NAN3)], "the state of parameter 0 is a float32 tensor of shape [3]"),
    ([(("optimizer_state", "state", 99), {})], "state for 99, which is not a listed parameter id"),
    ([(("optimizer_state", "param_groups", 0, "params", 1), 0)], "a parameter id is listed twice"),
    ([(("optimizer_state", "param_groups", 0, "params"), [0])], "parameter group 0 holds 1 parameters instead of 6"),
    ([(("optimizer_state", "param_groups"), [])], "0 parameter groups instead of 1"),
])
def test_a_damaged_optimizer_state_is_named_before_loading(trained, tmp_path, changes, fragment):
    """The case the fuzzer found (a NaN tensor where a parameter's state table belongs) and its relatives: the
    resume names the damage in one line instead of passing torch's own error on."""
    payload = torch.load(trained / "checkpoint.pt", weights_only=True)
    for path, value in changes:
        _set(payload, path, value)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(payload, run / "checkpoint.pt")
    with pytest.raises(LandscapeError) as e:
        T.train({"n_samples": 40, "epochs": 2, "batch_size": 20, "device": "cpu", "progress": False,
                 "model_config": {"depth": 2, "width": 8}, "out": str(run), "resume": True})
    assert "\n" not in str(e.value) and "optimizer state does not fit the run: " + fragment in str(e.value)


# ---- the hessian CLI: any argv and any weights file end in exit 0 or a one-line exit 2 ----

def _hessian_flags():
    from landscape.hessian.cli.main import _parser

    flags = [a.option_strings[-1] for a in _parser()._actions if a.option_strings and a.dest != "help"]
    value = st.one_of(_NUMBERS.map(str), st.text(max_size=8), st.sampled_from(["hessian", "ggn", "cpu", "2G", "0"]))
    return st.lists(st.tuples(st.sampled_from([*flags, "--probes", "--bogus"]), st.one_of(st.none(), value)),
                    max_size=6)


@FUZZ
@given(pairs=_hessian_flags())
def test_fuzz_hessian_argv_exits_0_or_one_line_2(pairs, tmp_path, monkeypatch, capsys):
    """Flags are checked before any compute (the run itself is stubbed): exit 0, or 2 with one line."""
    from landscape.hessian.cli import main as H

    monkeypatch.setattr(H, "_run", lambda args, out, device, states: 0)
    argv = [str(tmp_path / "ckpt.pt"), *_argv(pairs), "--out", str(tmp_path / "out")]
    code = run_cli(H.main, argv)
    err = capsys.readouterr().err.strip()
    if code == 2:
        assert err.splitlines() == [err] and err.startswith("error: ") and "Traceback" not in err, err
    else:
        assert code == 0, (code, err)


_USER_MODULE = "from landscape.models import build\n\ndef make():\n    return build('fc', depth=2, width=8)\n"


@pytest.fixture(scope="module")
def user_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("hcli_fuzz")
    (d / "hcli_fuzz_models.py").write_text(_USER_MODULE)
    sys.path.insert(0, str(d))
    model = build("fc", depth=2, width=8)
    torch.save(model.state_dict(), d / "weights.pt")
    yield d, (d / "weights.pt").read_bytes(), model.state_dict()
    sys.path.remove(str(d))


@FUZZ
@given(data=st.data())
def test_fuzz_hessian_weight_files_load_or_fail_in_one_line(data, user_weights, tmp_path):
    """`--model module:function` weights: random bytes, truncations, byte flips, junk or NaN tensors and
    malicious pickles load or give one `LandscapeError` line naming the file; no code ever runs."""
    from landscape.inputs import user_model

    d, blob, state = user_weights
    path, marker = tmp_path / "w.pt", tmp_path / "pwned"
    kind = data.draw(st.sampled_from(["bytes", "truncate", "flip", "junk", "nan", "evil"]), label="kind")
    if kind == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=400)))
    elif kind == "truncate":
        path.write_bytes(blob[: data.draw(st.integers(0, len(blob) - 1))])
    elif kind == "flip":
        at = data.draw(st.integers(0, len(blob) - 1))
        path.write_bytes(blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1:])
    else:
        mutated = dict(state)
        key = data.draw(st.sampled_from(sorted(mutated)))
        if kind == "junk":
            mutated[key] = data.draw(_JUNK)
        elif kind == "nan":
            mutated[key] = torch.full_like(mutated[key], float("nan"))
        else:
            mutated[key] = _Evil(marker)
        torch.save(mutated, path)
    try:
        model, _ = user_model("hcli_fuzz_models:make", path, torch.device("cpu"))
    except LandscapeError as e:
        msg = str(e)
        assert "\n" not in msg and str(path) in msg, msg
    else:
        assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not marker.exists()
