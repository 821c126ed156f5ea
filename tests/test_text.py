"""The offline byte-level text corpus: reproducible windows, disjoint splits by file, and exact bytes on a
directory whose content is known."""

import hashlib

import numpy as np
import pytest
import torch

from landscape import text
from landscape.errors import LandscapeError


def _tree(tmp_path):
    """Python files whose split is known from sha256 of their relative path (computed here, not by text.py)."""
    names = [f"m{i}.py" for i in range(40)] + ["pkg/sub.py", "site-packages/skipped.py"]
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"# {name}\nx = {len(name)}\n".encode())
    (tmp_path / "notes.txt").write_text("not python")
    return [n for n in sorted(names) if not n.startswith("site-packages")]


def test_stream_is_the_split_files_in_sorted_order(tmp_path):
    names = _tree(tmp_path)
    test_names = [n for n in names if hashlib.sha256(n.encode()).digest()[0] < 26]
    train_names = [n for n in names if n not in test_names]
    assert test_names and train_names
    for split, chosen in (("train", train_names), ("test", test_names)):
        stream, info = text.corpus(split, tmp_path)
        expected = b"".join((tmp_path / n).read_bytes() + b"\n" for n in chosen)
        assert stream.tobytes() == expected
        assert (info.files, info.tokens, info.sha256) == (len(chosen), len(expected),
                                                          hashlib.sha256(expected).hexdigest())


def test_windows_are_reproducible_and_consecutive(tmp_path):
    _tree(tmp_path)
    a = text.token_windows(5, 8, seed=3, root=tmp_path)
    assert torch.equal(a, text.token_windows(5, 8, seed=3, root=tmp_path))
    assert not torch.equal(a, text.token_windows(5, 8, seed=4, root=tmp_path))
    assert a.dtype == torch.int64 and a.shape == (5, 8)
    stream = text.corpus("train", tmp_path)[0].tobytes()
    for row in a:
        assert bytes(row.tolist()) in stream


def test_the_python_standard_library_gives_bytes_and_a_test_split():
    train = text.token_windows(4, 64, seed=0)
    assert train.shape == (4, 64) and int(train.min()) >= 0 and int(train.max()) < text.VOCAB
    info_train, info_test = text.corpus_info("train"), text.corpus_info("test")
    assert info_train["files"] > 5 * info_test["files"] > 0
    assert info_train["sha256"] == text.corpus_info("train")["sha256"]


def test_bad_requests_are_one_line_errors(tmp_path):
    _tree(tmp_path)
    with pytest.raises(LandscapeError, match="split must be"):
        text.corpus("valid", tmp_path)
    with pytest.raises(LandscapeError, match="fewer than one window"):
        text.token_windows(1, 10**6, root=tmp_path)
    with pytest.raises(LandscapeError, match="not a directory"):
        text.corpus("train", tmp_path / "missing")
    assert np.asarray(text.corpus("train", tmp_path)[0]).dtype == np.uint8
