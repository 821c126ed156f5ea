"""`import landscape` exposes the documented public API.

The reference is written out here, independently of landscape/__init__.py's table: each public name and
the module that defines it, and the names `landscape.probes` promises. A renamed, re-pointed, missing or
extra export fails, as does `landscape.train` changing meaning when the package is imported.
"""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import landscape

ROOT = Path(__file__).resolve().parents[1]

# the package each public name comes from, and its own name there when it differs (fit=train)
REFERENCE = """
landscape.train        fit=train TrainConfig
landscape.checkpoint   load_checkpoint save_checkpoint
landscape.data         load_data
landscape.models       build
landscape.hessian      HessianOperator GGNOperator slq_density top_eigenpairs hutchinson_trace hutchpp_trace
                       exact_hessian
landscape.probes       probe run_probes
landscape.surface      random_directions evaluate_grid linear_path Surface
landscape.errors       LandscapeError
"""


def _reference() -> dict[str, tuple[str, str]]:
    out, package = {}, None
    for line in REFERENCE.strip().splitlines():
        words = line.split()
        if line[0] != " ":
            package, words = words[0], words[1:]
        for word in words:
            name, _, own = word.partition("=")
            out[name] = (package, own or name)
    return out


DEFINED_IN = _reference()
PROBES_API = {"METRICS", "TRAIN_PROBES", "ProbeCallback", "ProbeOptions", "find_blocks", "make_probe_callback", "probe",
              "read_records", "records_by_block", "records_to_table", "run_probes", "to_csv", "to_json"}


def test_exports_are_exactly_the_documented_names():
    assert set(landscape.__all__) == set(DEFINED_IN)
    for name in DEFINED_IN:
        assert name in landscape.__doc__, f"{name} missing from the package docstring"


@pytest.mark.parametrize("name", sorted(DEFINED_IN))
def test_every_export_is_the_object_its_package_defines(name):
    package, own_name = DEFINED_IN[name]
    obj = getattr(landscape, name)
    assert obj is getattr(importlib.import_module(package), own_name)
    assert obj.__module__ == package or obj.__module__.startswith(package + "."), obj.__module__
    assert obj.__qualname__ == own_name


def test_probes_all_lists_what_users_call():
    import landscape.probes as P

    assert set(P.__all__) == PROBES_API
    for name in P.__all__:
        assert getattr(P, name) is not None


def test_fit_and_the_train_package_do_not_flip_on_import():
    """A function and a subpackage with one name flip when the subpackage is imported; fit never does."""
    code = ("import landscape; f = landscape.fit; p = landscape.train; import landscape.train, landscape.train.loop; "
            "import types; assert isinstance(landscape.train, types.ModuleType) and landscape.train is p; "
            "assert landscape.fit is f is landscape.train.train and callable(f)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        landscape.nope  # noqa: B018
    assert not hasattr(landscape, "nope")
