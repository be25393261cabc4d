"""Fixtures of tests/models and tests/compress: tiny PixArt and Flux transformers (shrunk real configs)
and matching seeded inputs. Each of those folders' conftest.py imports them, so they live here once."""

import pytest

from ditcompress.models import get_adapter
from ditcompress.models.tiny import tiny_inputs, tiny_transformer

from .threads import torch_threads

PRESET = {"pixart": "pixart-sigma", "flux": "flux-dev"}


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: tiny matmuls/SVDs spin-wait badly on a busy 2-core machine."""
    with torch_threads(1):
        yield


@pytest.fixture(params=["pixart", "flux"])
def family(request):
    """Both families, by name."""
    return request.param


@pytest.fixture
def adapter(family):
    """The registry's adapter for `family`."""
    return get_adapter(family)


@pytest.fixture
def model(family):
    """A tiny seeded teacher of `family`."""
    return tiny_transformer(PRESET[family])


@pytest.fixture
def inputs(family):
    """Seeded `(latents, t, cond)` for `family`."""
    return tiny_inputs(family)
