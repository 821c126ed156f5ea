"""Suite-wide settings: one intra-op thread per test process.

The tests run tiny models where thread hand-off costs more than it saves (8x slower
under contention on 2 cores); the benchmarks, not the tests, measure speed.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory) -> str:
    """One LANDSCAPE_CACHE directory per test module: its data sets are generated once and reused."""
    return str(tmp_path_factory.mktemp("landscape-cache"))


@pytest.fixture
def shared_cache(module_cache, monkeypatch) -> str:
    """LANDSCAPE_CACHE set to the module's cache for one test (`pytestmark = usefixtures("shared_cache")`)."""
    monkeypatch.setenv("LANDSCAPE_CACHE", module_cache)
    return module_cache


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """LANDSCAPE_CACHE of this test's own, and torch's thread count restored after it (the runners set it)."""
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    yield str(tmp_path / "cache")
    torch.set_num_threads(threads)
