"""One logger for the project; only the main process (rank 0) speaks under accelerate."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def process_rank() -> int:
    """Global rank from the launcher's environment (accelerate / torchrun set RANK)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs)."""
    return process_rank() == 0


def get_logger(name: str = "ditcompress") -> logging.Logger:
    """Project logger: INFO on rank 0, WARNING elsewhere, one handler, timestamps."""
    logger = logging.getLogger(name if name.startswith("ditcompress") else f"ditcompress.{name}")
    root = logging.getLogger("ditcompress")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        rank = process_rank()
        tag = f"[rank{rank}] " if rank else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {tag}%(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        root.propagate = False
    return logger


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """tqdm progress bar (with rates and ETA) shown on the main process only."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, disable=not is_main_process() or kwargs.pop("disable", False), **kwargs)
