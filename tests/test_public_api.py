"""`import landscape` exposes the documented public API, each name the object its module defines."""

import importlib

import pytest

import landscape


@pytest.mark.parametrize("name", landscape.__all__)
def test_every_export_resolves_to_its_module_object(name):
    module = importlib.import_module(landscape._EXPORTS[name])
    assert getattr(landscape, name) is getattr(module, name)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        landscape.nope  # noqa: B018
