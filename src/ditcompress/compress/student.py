"""Saving and loading students (`save_student`, `load_student`, `build_student`, `MANIFEST`).

They live with the strict loaders in `ditcompress.models.loading`, so that a family adapter's
`load_transformer` reads a saved student like a teacher; this module re-exports them.
"""

from ditcompress.models.loading import MANIFEST, WeightsMismatchError, build_student, load_student, save_student

__all__ = ["MANIFEST", "WeightsMismatchError", "build_student", "load_student", "save_student"]
