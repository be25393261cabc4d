"""The tiny-transformer fixtures (tests/tiny_families.py) for the score tests."""

from ..tiny_families import adapter, family, inputs, model, single_thread  # noqa: F401 (fixtures)
