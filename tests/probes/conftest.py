import pytest
import torch


@pytest.fixture(autouse=True)
def _float64():
    """Probe tests compare against exact references: build every model and tensor in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
