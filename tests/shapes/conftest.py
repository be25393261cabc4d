"""A small shapes dataset built once per test session from the real config, shrunk."""

import pytest

from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.shapes.dataset import build_dataset

SMALL = dict(n_train=300, n_reference=8, prompts_per_task=5, dpg_prompts=12)


@pytest.fixture(scope="session")
def small_cfg() -> ShapesDataConfig:
    """The default config with few images."""
    return ShapesDataConfig(**SMALL)


@pytest.fixture(scope="session")
def built(tmp_path_factory, small_cfg):
    """(out_dir, stats) of a dataset built with seed 0."""
    out = tmp_path_factory.mktemp("shapes") / "data"
    return out, build_dataset(small_cfg, 0, out, progress=False)
