"""The tiny-transformer fixtures, shared with tests/compress/ (one copy, in tests/tiny_families.py)."""

from ..tiny_families import adapter, family, inputs, model, single_thread  # noqa: F401 (fixtures)
