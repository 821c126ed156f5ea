"""The data sets' sources: MNIST-1D generated offline and cached, CIFAR-10/100 and SVHN read from their files.

`landscape.data.load_data` turns these arrays into normalized device tensors. CIFAR's python batches are read
with an unpickler that can only rebuild numpy arrays, SVHN's `.mat` files with `scipy.io.loadmat`; torchvision
is needed only to download them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.io import atomic_write

VISION_HINT = "pip install landscape-diagnostics[vision]"


def cache_dir() -> Path:
    """Where generated and downloaded data are kept.

    Returns:
        `$LANDSCAPE_CACHE`, else `~/.cache/landscape`.
    """
    return Path(os.environ.get("LANDSCAPE_CACHE") or Path.home() / ".cache" / "landscape")


def mnist1d_arrays(n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate (or read from cache) n_train training and the next n_train // 4 test samples of MNIST-1D.

    The cache key is the generator's version plus the arguments changed from its defaults, so a cache hit
    never imports mnist1d (which pulls in matplotlib and scipy.interpolate).

    Args:
        n_train: the training samples.
        seed: the generation seed.

    Returns:
        (train_x [n, 40] float32, train_y [n] int64, test_x, test_y).
    """
    from importlib.metadata import version

    n_total = -(-(n_train + max(1, n_train // 4)) // 10) * 10  # make_dataset: num_samples // 10 per class
    overrides = {"num_samples": n_total, "train_split": 1.0, "seed": seed}
    key_src = json.dumps({"mnist1d": version("mnist1d"), **overrides}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    path = cache_dir() / f"mnist1d_n{n_total}_seed{seed}_{key}.npz"
    xs = ys = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                xs, ys = f["x"], f["y"]
        except (OSError, ValueError, KeyError, EOFError):
            xs = ys = None                                          # unreadable cache: regenerate
    if xs is None or len(xs) != n_total:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        vars(args).update(overrides)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:                                                        # make_dataset reseeds the global RNGs
            ds = make_dataset(args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        xs, ys = ds["x"].astype(np.float32), ds["y"].astype(np.int64)
        with atomic_write(path) as f:
            np.savez(f, x=xs, y=ys)
    return xs[:n_train], ys[:n_train], xs[n_train:], ys[n_train:]


# ---- CIFAR: the python-pickle batches, read with an unpickler that can only rebuild numpy arrays ----

_C10 = ("CIFAR-10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
_C100 = ("CIFAR-100", "cifar-100-python", ["train"], ["test"])
_CIFAR = {  # name: (title, directory, training files, test files, label key, classes, torchvision class)
    "cifar10": (*_C10, b"labels", 10, "CIFAR10"),
    "cifar100": (*_C100, b"fine_labels", 100, "CIFAR100"),
    "cifar100-coarse": (*_C100, b"coarse_labels", 20, "CIFAR100"),
}


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar,
               "_frombuffer": numeric._frombuffer}
    import _codecs  # protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1")

    out: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                          ("_codecs", "encode"): _codecs.encode}
    for mod in ("numpy.core", "numpy._core"):
        for fn, obj in allowed.items():
            out[(f"{mod}.{'numeric' if fn == '_frombuffer' else 'multiarray'}", fn)] = obj
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; refuses every other global."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to import {module}.{name}") from None


def read_cifar_batch(path: Path) -> dict:
    """Read one CIFAR python batch file (a pickled dict with bytes keys) without executing code.

    Args:
        path: the batch file.

    Returns:
        Its dict (b"data", b"labels" or b"fine_labels", ...).
    """
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise LandscapeError(f"{path}: not a readable CIFAR batch file ({e})") from None
    if not isinstance(batch, dict) or not isinstance(batch.get(b"data"), np.ndarray):
        raise LandscapeError(f"{path}: not a CIFAR batch file (no b'data' array)")
    return batch


def cifar_arrays(name: str, root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """One split of CIFAR-10/100 from its python batches under `root` (downloaded first if asked).

    Args:
        name: "cifar10", "cifar100" (fine labels) or "cifar100-coarse" (the 20 superclasses).
        root: the directory holding cifar-10-batches-py / cifar-100-python.
        split: "train" or "test".
        download: download a missing set (needs torchvision).

    Returns:
        (images [N, 3, 32, 32] uint8, labels [N] int64, the number of classes).
    """
    title, folder, train_files, test_files, label_key, n_classes, tv_class = _CIFAR[name]
    directory = root / folder
    files = [directory / f for f in (train_files if split == "train" else test_files)]
    if not all(f.is_file() for f in files):
        if not download:
            raise LandscapeError(f"{title} not found under {root}: pass --download or place {folder} there")
        cls = getattr(_torchvision_datasets(title), tv_class)
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    xs, ys = [], []
    for f in files:
        batch = read_cifar_batch(f)
        if label_key not in batch:
            raise LandscapeError(f"{f}: CIFAR batch without {label_key.decode()}")
        data = batch[b"data"]
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise LandscapeError(f"{f}: expected uint8 data [N, 3072], got {data.dtype} {list(data.shape)}")
        try:
            labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise LandscapeError(f"{f}: {label_key.decode()} must be a list of integers") from None
        if len(labels) != len(data):
            raise LandscapeError(f"{f}: {len(labels)} labels for {len(data)} images")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys), n_classes


def svhn_arrays(name: str, root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """SVHN cropped digits `{train,test}_32x32.mat`: X [32, 32, 3, N] uint8, y [N, 1] with 10 meaning 0.

    Args:
        name: "svhn" (the signature is `cifar_arrays`').
        root: the directory holding the .mat files.
        split: "train" or "test".
        download: download a missing file (needs torchvision).

    Returns:
        (images [N, 3, 32, 32] uint8, labels [N] int64 in [0, 10), 10).
    """
    path = root / f"{split}_32x32.mat"
    if not path.is_file():
        if not download:
            raise LandscapeError(f"SVHN not found under {root}: pass --download or place {path.name} there")
        url, filename, md5 = _torchvision_datasets("SVHN").SVHN.split_list[split]
        from torchvision.datasets.utils import download_url

        download_url(url, str(root), filename, md5)
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LandscapeError(f"{path}: not a readable SVHN .mat file ({e})") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise LandscapeError(f"{path}: expected uint8 X [32, 32, 3, N], got {x.dtype} {list(x.shape)}")
    try:
        labels = np.asarray(y, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise LandscapeError(f"{path}: y must be an array of integers") from None
    return x.transpose(3, 2, 0, 1), labels % 10, 10


def _torchvision_datasets(title: str):
    try:
        import torchvision.datasets
    except ImportError:
        raise LandscapeError(f"downloading {title} needs torchvision: {VISION_HINT}") from None
    return torchvision.datasets
