"""`python -m landscape.hessian` and `python -m landscape.surface` on a local HF model directory (save_pretrained,
safetensors) with token files or text + a local tokenizer: outputs against exact Hessians and hand-computed
losses, and one-line errors where something is missing (nothing is ever downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from landscape.cli import run_cli
from landscape.hessian import exact_hessian
from landscape.hessian.cli.main import main as hessian_main
from landscape.surface.__main__ import main as surface_main
from tests.objective import hf

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny GPT-2 saved with save_pretrained, 6 rows of 8 tokens as .pt and as a .npy stream."""
    tmp = tmp_path_factory.mktemp("hf_cli")
    model = hf.gpt2().float()
    model.save_pretrained(tmp / "gpt2")
    ids = torch.randint(0, hf.VOCAB, (6, 8), generator=torch.Generator().manual_seed(0))
    torch.save(ids, tmp / "tokens.pt")
    np.save(tmp / "stream.npy", ids.reshape(-1).numpy())
    return tmp, ids


def _loaded(tmp):
    return transformers.AutoModelForCausalLM.from_pretrained(tmp / "gpt2", local_files_only=True).eval()


def _spectrum(argv, capsys):
    assert run_cli(hessian_main, argv) == 0, capsys.readouterr().err
    return json.loads((__import__("pathlib").Path(argv[argv.index("--out") + 1]) / "spectrum.json").read_text())


def test_hessian_cli_on_a_model_directory_and_token_file_matches_the_exact_hessian(lm, capsys):
    tmp, ids = lm
    s = _spectrum([str(tmp / "gpt2"), "--tokens", str(tmp / "tokens.pt"), "--batch-size", "4", "--iters", "40",
                   "--vectors", "2", "--top-k", "2", "--out", str(tmp / "out_pt"), "--no-progress"], capsys)
    model = _loaded(tmp).double()
    eigs = torch.linalg.eigvalsh(exact_hessian(model, None, [{"input_ids": ids}])).numpy()
    assert s["n_samples"] == 6 and s["data"]["rows"] == 6 and s["data"]["seq_len"] == 8
    assert s["lambda_max"] == pytest.approx(eigs.max(), rel=1e-4)
    np.testing.assert_allclose(s["top_eigenvalues"], eigs[::-1][:2], rtol=1e-4)


def test_a_npy_stream_is_cut_into_rows(lm, capsys):
    tmp, ids = lm
    s = _spectrum([str(tmp / "gpt2"), "--tokens", str(tmp / "stream.npy"), "--seq-len", "16", "--iters", "10",
                   "--vectors", "1", "--top-k", "1", "--out", str(tmp / "out_npy"), "--no-progress"], capsys)
    assert s["n_samples"] == 3 and s["data"]["seq_len"] == 16


def _tokenizer(path):
    """A word-level tokenizer over the words a..j (ids 1..10, 0 unknown), built offline and saved."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate("abcdefghij")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)


def test_text_and_a_local_tokenizer(lm, capsys):
    tmp, _ = lm
    _tokenizer(tmp / "tok")
    (tmp / "text.txt").write_text(" ".join("abcdefghij"[i % 10] for i in range(50)))
    s = _spectrum([str(tmp / "gpt2"), "--text", str(tmp / "text.txt"), "--tokenizer", str(tmp / "tok"),
                   "--seq-len", "10", "--iters", "10", "--vectors", "1", "--top-k", "1", "--out", str(tmp / "out_txt"),
                   "--no-progress"], capsys)
    assert s["n_samples"] == 5 and s["data"]["tokenizer"] == str(tmp / "tok")


def test_surface_cli_center_is_the_models_own_loss(lm, capsys):
    tmp, ids = lm
    out = tmp / "surf"
    argv = [str(tmp / "gpt2"), "--tokens", str(tmp / "tokens.pt"), "--dims", "1", "--grid", "-1:1:5",
            "--out", str(out), "--no-progress"]
    assert run_cli(surface_main, argv) == 0, capsys.readouterr().err
    with np.load(out / "surface.npz") as z:
        center = float(z["loss"][2])
    with torch.no_grad():
        expected = float(_loaded(tmp)(input_ids=ids, labels=ids).loss)
    assert center == pytest.approx(expected, rel=1e-5)
    assert json.loads((out / "surface.json").read_text())["settings"]["n_samples"] == 6


def test_surface_interp_between_two_model_directories(lm, capsys):
    tmp, _ = lm
    other = hf.gpt2(seed=1).float()
    other.save_pretrained(tmp / "gpt2_b")
    out = tmp / "interp"
    argv = [str(tmp / "gpt2"), "--tokens", str(tmp / "tokens.pt"), "--directions", "interp", "--to",
            str(tmp / "gpt2_b"), "--grid", "0:1:3", "--out", str(out), "--no-progress"]
    assert run_cli(surface_main, argv) == 0, capsys.readouterr().err
    assert "barrier_linear" in json.loads((out / "surface.json").read_text())


@pytest.mark.parametrize("extra, message", [
    ([], "needs its data: --tokens FILE, or --text FILE --tokenizer DIR"),
    (["--text", "x.txt"], "--text FILE and --tokenizer DIR go together"),
    (["--tokens", "missing.pt"], "--tokens missing.pt: no such file"),
    (["--tokens", "{tmp}/stream.npy", "--seq-len", "1000"], "no complete row of tokens"),
    (["--tokens", "{tmp}/tokens.pt", "--data", "mnist1d"], "--model and --data do not apply"),
    (["--tokens", "{tmp}/tokens.pt", "--n-samples", "7"], "--n-samples must be in 1..6"),
    (["--text", "{tmp}/text.txt", "--tokenizer", "{tmp}/nothing"], "--tokenizer"),
])
def test_bad_lm_inputs_are_one_line(lm, capsys, extra, message):
    tmp, _ = lm
    (tmp / "text.txt").write_text("a b c")
    argv = [str(tmp / "gpt2"), *[e.format(tmp=tmp) for e in extra], "--out", str(tmp / "bad"), "--no-progress"]
    assert run_cli(hessian_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_ids_outside_the_vocabulary_and_missing_weights(lm, tmp_path, capsys):
    tmp, _ = lm
    torch.save(torch.full((2, 4), hf.VOCAB), tmp_path / "big.pt")
    argv = [str(tmp / "gpt2"), "--tokens", str(tmp_path / "big.pt"), "--out", str(tmp_path / "o")]
    assert run_cli(hessian_main, argv) == 2
    assert "outside the model's vocabulary [0, 11)" in capsys.readouterr().err
    hf.gpt2().float().save_pretrained(tmp_path / "broken")
    (tmp_path / "broken" / "model.safetensors").unlink()
    argv = [str(tmp_path / "broken"), "--tokens", str(tmp / "tokens.pt"), "--out", str(tmp_path / "o")]
    assert run_cli(hessian_main, argv) == 2
    assert "cannot load the weights without a download" in capsys.readouterr().err


def test_token_flags_need_a_model_directory(lm, tmp_path, capsys):
    tmp, _ = lm
    torch.save({}, tmp_path / "ckpt.pt")
    argv = [str(tmp_path / "ckpt.pt"), "--tokens", str(tmp / "tokens.pt"), "--out", str(tmp_path / "o")]
    assert run_cli(hessian_main, argv) == 2
    assert "need an HF model directory" in capsys.readouterr().err
