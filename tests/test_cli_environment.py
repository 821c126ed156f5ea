"""Every CLI leaves the process as it found it, and runs the same however it was started.

A CLI called in-process (a notebook, a test, a job runner) must hand back the SIGINT/SIGTERM handlers and
torch's thread count it found: here SIGINT starts ignored (as under nohup or cron, where Python installs no
handler of its own) and SIGTERM with a handler of the caller's; each CLI runs once to the end.
"""

from __future__ import annotations

import json
import signal

import pytest
import torch

from landscape.cli import default_threads, run_cli

pytestmark = pytest.mark.usefixtures("private_cache")

EXPERIMENT = """
name = "env"
notes = ["[TD] a test grid"]
headline = ["train_acc"]

[cells.plain]
label = "plain"
model_config = { kind = "plain" }

[profiles.quick]
seeds = [0]
device = "cpu"
threads = 1
model_config = { depth = 2, width = 4 }
train = { n_samples = 40, epochs = 1, batch_size = 20 }
"""


def _callers_handler(signum, frame):  # pragma: no cover - never called: only its identity matters
    raise AssertionError("the caller's handler ran")


@pytest.fixture
def foreign_state():
    """SIGINT ignored, SIGTERM the caller's, 3 torch threads; the test's state is put back after."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _callers_handler)
    torch.set_num_threads(3)
    state = {signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: _callers_handler, "threads": 3}
    yield state
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    torch.set_num_threads(threads)


def _checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.data import load_data
    from landscape.models import build

    data = load_data("mnist1d", n_samples=60)
    model = build("fc", kind="residual", depth=2, width=8)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, meta={"model": model.build_spec, "data": data.spec, "epoch": 0})
    return path


def _train(tmp_path):
    from landscape.train.cli import main

    return main, ["--n-samples", "40", "--epochs", "1", "--batch-size", "20", "--device", "cpu", "--no-progress",
                  "--model-config", '{"depth": 2, "width": 4}', "--threads", "1", "--out", str(tmp_path / "run")]


def _hessian(tmp_path):
    from landscape.hessian.cli.main import main

    return main, [str(_checkpoint(tmp_path)), "--n-samples", "40", "--iters", "5", "--vectors", "1", "--top-k", "0",
                  "--no-progress", "--threads", "1", "--out", str(tmp_path / "h")]


def _surface(tmp_path):
    from landscape.surface.__main__ import main

    return main, [str(_checkpoint(tmp_path)), "--grid", "-1:1:3", "--dims", "1", "--n-samples", "30",
                  "--no-progress", "--out", str(tmp_path / "s")]              # the default thread count


def _experiment(tmp_path):
    from landscape.experiment.cli import main

    (tmp_path / "env.toml").write_text(EXPERIMENT)
    return main, [str(tmp_path / "env.toml"), "--out", str(tmp_path / "e"), "--no-progress"]


def _quickstart(tmp_path):
    from landscape.quickstart import main

    return main, ["--out", str(tmp_path / "q"), "--figures", str(tmp_path / "fig"), "--epochs", "1", "--depth", "2",
                  "--width", "4", "--n-samples", "60", "--measure-samples", "20", "--slq-iters", "3",
                  "--slq-vectors", "1", "--nets", "plain", "--device", "cpu"]


@pytest.mark.parametrize("cli", [_train, _hessian, _surface, _experiment, _quickstart],
                         ids=["train", "hessian", "surface", "experiment", "quickstart"])
def test_every_cli_puts_back_the_signal_handlers_and_threads_it_found(cli, tmp_path, foreign_state):
    main, argv = cli(tmp_path)
    assert run_cli(main, argv) == 0
    assert signal.getsignal(signal.SIGINT) is foreign_state[signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) is foreign_state[signal.SIGTERM]
    assert torch.get_num_threads() == foreign_state["threads"]


def test_the_default_thread_count_follows_the_load(monkeypatch):
    """round(N − L) idle cores, capped by the usable CPUs and torch's own default; OMP_NUM_THREADS wins."""
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)            # physical cores, as torch counts them
    for load, want in ((0.0, 4), (4.4, 4), (5.6, 2), (7.4, 1), (30.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert default_threads() == want, load
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3


def test_surface_and_hessian_record_the_threads_they_used(tmp_path, foreign_state):
    main, argv = _hessian(tmp_path)
    assert run_cli(main, argv) == 0
    assert json.loads((tmp_path / "h" / "spectrum.json").read_text())["threads"] == 1
    main, argv = _surface(tmp_path)
    assert run_cli(main, [*argv, "--threads", "2"]) == 0
    assert json.loads((tmp_path / "s" / "surface.json").read_text())["threads"] == 2


def test_train_help_is_written_for_the_command_line(capsys):
    from landscape.train import cli, optim

    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0
    for fragment in (cli.__doc__.splitlines()[0], optim.__doc__.splitlines()[0], "(This module"):
        assert fragment not in text
    for section in ("examples:", "outputs (docs/formats.md):", "learning rate at optimizer step", "exit status:"):
        assert section in text


def test_train_resume_keeps_the_runs_thread_count(tmp_path, monkeypatch, foreign_state):
    """Thread counts change float rounding: a resume without --threads uses the count the run used."""
    import landscape.cli

    main, argv = _train(tmp_path)
    assert run_cli(main, argv) == 0                                     # --threads 1
    monkeypatch.setattr(landscape.cli, "default_threads", lambda: 2)
    at = argv.index("--threads")
    resume = argv[:at] + argv[at + 2:]
    resume[resume.index("--epochs") + 1] = "2"
    assert run_cli(main, [*resume, "--resume"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["threads"] == 1
    assert run_cli(main, [*resume[:-2], "--out", str(tmp_path / "fresh")]) == 0
    assert json.loads((tmp_path / "fresh" / "config.json").read_text())["config"]["threads"] == 2
