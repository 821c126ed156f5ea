"""The foundation helpers every CLI and writer shares: first_line, strict JSON, atomic files, signals,
output checks, argparse types and exact mode restoring."""

import argparse
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

from landscape import cli, io
from landscape.errors import LandscapeError, first_line
from landscape.modes import preserved_modes


def test_first_line_takes_the_first_nonempty_line_and_never_crashes_on_empty():
    assert first_line(ValueError("\n  bad shape\nsecond")) == "bad shape"
    assert first_line(KeyError()) == "KeyError"          # the old helper's IndexError case
    assert first_line("") == ""
    assert first_line("x" * 500, limit=10) == "xxxxxxx..."


def test_json_writes_non_finite_as_null_and_numpy_as_python(tmp_path):
    obj = {"a": float("nan"), "b": [np.float32(1.5), np.inf], "c": torch.tensor([1.0, -math.inf]),
           "d": np.arange(3), 4: tmp_path}
    path = io.write_json(tmp_path / "x.json", obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": [1.0, None], "d": [0, 1, 2], "4": str(tmp_path)}


def test_jsonl_append_and_read_skip_a_torn_last_line_only(tmp_path):
    path = tmp_path / "r.jsonl"
    io.append_jsonl(path, [{"x": 1}, {"x": float("nan")}])
    with open(path, "a") as f:
        f.write('{"x": 3')                                   # a crash mid-line
    assert io.read_jsonl(path) == [{"x": 1}, {"x": None}]
    path.write_text('{"x": 1}\nnot json\n{"x": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        io.read_jsonl(path)


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), io.atomic_write(path, "w") as f:
        f.write("partial")
        raise RuntimeError
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_npz_round_trip(tmp_path):
    io.write_npz(tmp_path / "a.npz", x=torch.arange(4.0), y=[1, 2])
    with np.load(tmp_path / "a.npz") as z:
        assert z["x"].tolist() == [0, 1, 2, 3] and z["y"].tolist() == [1, 2]


def test_prepare_out_dir_refuses_a_file_and_an_unwritable_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LandscapeError, match="not a directory"):
        cli.prepare_out_dir(tmp_path / "file")
    with pytest.raises(LandscapeError, match="not a writable directory"):
        cli.prepare_out_dir(tmp_path / "file" / "sub")
    assert cli.prepare_out_dir(tmp_path / "a" / "b").is_dir()


def test_run_cli_maps_errors_and_signals_to_exit_codes(capsys):
    def bad(argv):
        raise LandscapeError("first\nsecond")

    assert cli.run_cli(bad) == 2 and capsys.readouterr().err == "error: first\n"

    def stopped(argv):
        with cli.interrupts("raise"):
            os.kill(os.getpid(), signal.SIGTERM)
        return 0

    assert cli.run_cli(stopped) == 143


def test_flag_mode_records_the_first_signal_and_raises_on_the_second():
    before = {sig: signal.getsignal(sig) for sig in cli.SIGNALS}   # SIG_IGN under nohup / cron, not Python's
    with pytest.raises(cli.Interrupted) as info, cli.interrupts("flag") as sig:
        os.kill(os.getpid(), signal.SIGINT)
        assert sig.received == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
    assert info.value.exit_code == 130
    assert {sig: signal.getsignal(sig) for sig in cli.SIGNALS} == before


@pytest.mark.parametrize("fn,text,ok", [(cli.positive_int, "3", 3), (cli.positive_int, "0", None),
                                        (cli.nonneg_int, "0", 0), (cli.positive_float, "-1", None),
                                        (cli.positive_float, "nan", None), (cli.positive_float, "0.5", 0.5),
                                        (cli.memory_size, "2K", 2048), (cli.memory_size, "0", None)])
def test_argparse_types(fn, text, ok):
    if ok is None:
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)
    else:
        assert fn(text) == ok


def test_preserved_modes_restores_a_mixed_state_exactly():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model.train()
    model[1].eval()                                          # a frozen BN inside a training model
    before = [m.training for m in model.modules()]
    with preserved_modes(model, train=False):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before   # model.train(True) would have lost model[1]


def test_check_writable_refuses_like_prepare_out_dir_but_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LandscapeError, match="exists and is not a directory"):
        cli.check_writable(tmp_path / "file")
    with pytest.raises(LandscapeError, match="file is not a directory"):
        cli.check_writable(tmp_path / "file" / "sub", "--tensorboard")
    cli.check_writable(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()
