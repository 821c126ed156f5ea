"""landscape.data: MNIST-1D generation and cache, normalization, augmentation, CIFAR/SVHN files, errors."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape import data as ldata
from landscape.data import crop_flip, load_data, read_cifar_batch
from landscape.errors import LandscapeError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "cache"))


def test_mnist1d_matches_the_generator_and_is_deterministic():
    from mnist1d.data import get_dataset_args, make_dataset

    train = load_data(n_samples=400, seed=42, normalize=False)
    test = load_data(split="test", n_samples=400, seed=42, normalize=False)
    args = get_dataset_args()
    args.num_samples = 500                       # 400 train + 100 test, the generator's own 80/20 split
    ref = make_dataset(args)
    np.testing.assert_array_equal(train.X.numpy(), ref["x"].astype(np.float32))
    np.testing.assert_array_equal(train.y.numpy(), ref["y"])
    np.testing.assert_array_equal(test.X.numpy(), ref["x_test"].astype(np.float32))
    assert train.X.shape == (400, 40) and train.X.dtype == torch.float32 and train.y.dtype == torch.int64
    assert train.n_classes == 10 and len(test) == 100
    other = load_data(n_samples=400, seed=43, normalize=False)
    assert not torch.equal(other.X, train.X)


def test_mnist1d_cache_is_used_and_global_rngs_are_untouched(tmp_path, monkeypatch):
    py, npy = random.getstate(), np.random.get_state()
    first = load_data(n_samples=80, seed=1)
    assert random.getstate() == py and np.array_equal(np.random.get_state()[1], npy[1])
    files = list((tmp_path / "cache").glob("mnist1d_*.npz"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob(".*tmp"))

    import mnist1d.data

    def boom(*a, **k):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(mnist1d.data, "make_dataset", boom)
    again = load_data(n_samples=80, seed=1)
    assert torch.equal(first.X, again.X) and torch.equal(first.y, again.y)

    files[0].write_bytes(b"not an npz")                     # a damaged cache is regenerated
    monkeypatch.undo()
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "cache"))
    assert torch.equal(load_data(n_samples=80, seed=1).X, first.X)


def test_normalization_uses_training_statistics():
    raw_tr = load_data(n_samples=160, seed=3, normalize=False)
    raw_te = load_data(split="test", n_samples=160, seed=3, normalize=False)
    tr = load_data(n_samples=160, seed=3)
    te = load_data(split="test", n_samples=160, seed=3)
    x64 = raw_tr.X.double()
    assert tr.mean.item() == pytest.approx(x64.mean().item(), abs=1e-6)
    assert tr.std.item() == pytest.approx(x64.std(unbiased=False).item(), rel=1e-6)
    assert torch.equal(te.mean, tr.mean) and torch.equal(te.std, tr.std)
    torch.testing.assert_close(te.X, (raw_te.X - tr.mean) / tr.std)
    assert abs(tr.X.double().mean().item()) < 1e-5
    assert tr.X.double().std(unbiased=False).item() == pytest.approx(1, 1e-5)


def test_spec_reloads_the_same_split():
    d = load_data(split="test", n_samples=80, seed=5)
    assert d.spec == {"name": "mnist1d", "split": "test", "n_samples": 80, "root": None, "seed": 5,
                      "normalize": True}
    assert torch.equal(load_data(**d.spec).X, d.X)


def test_batches_cover_the_data_once_and_shuffle_is_seeded():
    d = load_data(n_samples=80, seed=0)
    plain = list(d.batches(30))
    assert [len(y) for _, y in plain] == [30, 30, 20]
    assert torch.equal(torch.cat([X for X, _ in plain]), d.X)
    a = torch.cat([y for _, y in d.batches(30, shuffle=True, generator=torch.Generator().manual_seed(7))])
    b = torch.cat([y for _, y in d.batches(30, shuffle=True, generator=torch.Generator().manual_seed(7))])
    assert torch.equal(a, b) and not torch.equal(a, d.y)
    assert torch.equal(torch.sort(a).values, torch.sort(d.y).values)
    with pytest.raises(LandscapeError, match="images"):
        next(d.batches(10, augment=True))


def test_crop_flip_matches_a_per_image_reference():
    X = torch.randn(6, 3, 8, 10)
    out = crop_flip(X, pad=4, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)                    # same draws, in the same order
    offsets = torch.randint(0, 9, (2, 6), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    for b in range(6):
        p = F.pad(X[b:b + 1], (4, 4, 4, 4), mode="reflect")[0]
        ref = p[:, offsets[0, b]:offsets[0, b] + 8, offsets[1, b]:offsets[1, b] + 10]
        if flip[b]:
            ref = ref.flip(-1)
        assert torch.equal(out[b], ref)
    assert flip.any() and not flip.all() and out.is_contiguous()


def _write_cifar(root, folder, files, n, label_keys, protocol, seed=0):
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True, exist_ok=True)
    written = {}
    for name in files:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"batch_label": b"batch"}
        for key, k in label_keys.items():
            batch[key] = [int(v) for v in rng.integers(0, k, n)]
        with open(root / folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        written[name] = batch
    return written


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_files_round_trip(tmp_path, protocol):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = _write_cifar(tmp_path, "cifar-10-batches-py", files, 4, {b"labels": 10}, protocol)
    train = load_data("cifar10", root=tmp_path, normalize=False)
    raw = np.concatenate([written[f][b"data"] for f in files[:5]])
    assert train.X.shape == (20, 3, 32, 32) and train.n_classes == 10
    assert torch.equal(train.X, torch.from_numpy(raw.reshape(-1, 3, 32, 32)).float() / 255)
    assert train.y.tolist() == sum((written[f][b"labels"] for f in files[:5]), [])
    c = raw.reshape(-1, 3, 1024).astype(np.float64) / 255
    np.testing.assert_allclose(train.mean.numpy(), c.mean((0, 2)), rtol=1e-6)
    np.testing.assert_allclose(train.std.numpy(), c.std((0, 2)), rtol=1e-6)
    test = load_data("cifar10", split="test", root=tmp_path)
    assert test.X.shape == (4, 3, 32, 32) and torch.equal(test.mean, train.mean)
    sub = load_data("cifar10", root=tmp_path, n_samples=6)
    sub_test = load_data("cifar10", split="test", root=tmp_path, n_samples=6)
    assert len(sub) == 6 and len(sub_test) == 4 and torch.equal(sub_test.mean, sub.mean)
    np.testing.assert_allclose(sub.mean.numpy(), c[:6].mean((0, 2)), rtol=1e-6)
    g = torch.Generator().manual_seed(0)
    X, y = next(sub.batches(5, shuffle=True, generator=g, augment=True))
    assert X.shape == (5, 3, 32, 32) and y.shape == (5,)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    written = _write_cifar(tmp_path, "cifar-100-python", ["train", "test"], 5,
                           {b"fine_labels": 100, b"coarse_labels": 20}, protocol=2)
    fine = load_data("cifar100", root=tmp_path)
    coarse = load_data("cifar100-coarse", root=tmp_path, split="test")
    assert fine.n_classes == 100 and fine.y.tolist() == written["train"][b"fine_labels"]
    assert coarse.n_classes == 20 and coarse.y.tolist() == written["test"][b"coarse_labels"]


def test_svhn_mat_round_trip(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": X, "y": np.array([[10], [1], [2], [9], [10]][:n])})
    d = load_data("svhn", root=tmp_path, normalize=False)
    assert d.X.shape == (5, 3, 32, 32) and d.y.tolist() == [0, 1, 2, 9, 0]
    mat = __import__("scipy.io").io.loadmat(tmp_path / "train_32x32.mat")["X"]
    assert torch.equal(d.X[2, 1] * 255, torch.from_numpy(mat[:, :, 1, 2]).float())


def test_missing_and_unknown_data_give_one_line_errors(tmp_path):
    with pytest.raises(LandscapeError) as e:
        load_data("cifar10", root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "--download" in msg and "cifar-10-batches-py" in msg and str(tmp_path) in msg
    with pytest.raises(LandscapeError, match="SVHN not found"):
        load_data("svhn", root=tmp_path, split="test")
    with pytest.raises(LandscapeError, match="known: mnist1d, cifar10"):
        load_data("imagenet")
    with pytest.raises(LandscapeError, match="split"):
        load_data(split="val")


def test_download_without_torchvision_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(LandscapeError, match=r"pip install landscape-diagnostics\[vision\]"):
        load_data("cifar10", root=tmp_path, download=True)


class _Evil:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar_reader_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "data_batch_1"
    with open(bad, "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f, protocol=2)
    with open(bad, "rb") as f:                             # the file really would run code with pickle.load
        pickle.load(f)[b"data"].close()
    assert marker.exists()
    marker.unlink()
    with pytest.raises(LandscapeError, match="refusing to import"):
        read_cifar_batch(bad)
    assert not marker.exists()
    assert set(ldata.DATASETS) == {"mnist1d", "cifar10", "cifar100", "cifar100-coarse", "svhn"}


def test_the_measurement_set_is_one_seeded_permutations_prefix():
    """The definition (the first n of torch.randperm(N) from a generator seeded 0), nested sizes, the same set
    on every call, and classes mixed even when the data set is stored sorted by class."""
    y = torch.arange(100) // 10                                   # sorted by class: the first 10 are all class 0
    data = ldata.TensorData(torch.arange(100.0)[:, None], y, 10, {}, torch.zeros(1), torch.ones(1))
    X, labels = ldata.measurement_set(data, 30)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(X[:, 0].long(), perm[:30]) and torch.equal(labels, y[perm[:30]])
    assert torch.equal(ldata.measurement_set(data, 10)[0], X[:10])                 # nested
    assert torch.equal(ldata.measurement_set(data, 30)[0], X)                       # fixed
    assert len(set(labels.tolist())) > 5
    assert len(ldata.measurement_set(data, 1000)[0]) == 100
    assert ldata.measurement_set_record(30, 100) == {"samples": 30, "of": 100, "rule": ldata.MEASUREMENT_RULE}
    with pytest.raises(LandscapeError, match="at least 1 sample"):
        ldata.measurement_set(data, 0)
