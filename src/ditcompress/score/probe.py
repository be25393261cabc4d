"""Measuring a model with some blocks modified: the metric-based criterion (eq 4.4), eq 4.15, the
measured damage, and the objective every selection algorithm optimises.

The model is modified in place and restored on exit (`modified`), so a candidate costs its
renders, not a copy or a reload of the teacher; every measurement is memoised on disk, so a
killed stage resumes and greedy, Optuna and the exhaustive oracle share the subsets they visit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ditcompress.compress.record import attach
from ditcompress.compress.removal import execution_order, remove_blocks
from ditcompress.compress.svd import plan, svd_compress
from ditcompress.data.shards import atomic_write
from ditcompress.metrics.base import ImageSet
from ditcompress.models.base import unwrap
from ditcompress.models.registry import adapter_for
from ditcompress.utils.logging import progress

MODIFICATIONS = ("remove", "svd")


def n_params(model: nn.Module) -> int:
    """Parameters of a module."""
    return sum(p.numel() for p in model.parameters())


@contextmanager
def modified(transformer: nn.Module, block_ids, modification: str, c_fixed: float = 0.6) -> Iterator[nn.Module]:
    """The model with `block_ids` removed (eq 4.6) or SVD-compressed by `c_fixed` (eq 4.7–4.9), in place.

    On exit the original blocks, layers, config counts and compression record are back: the same
    module objects, so the weights are bit-identical and nothing is copied.
    """
    model = unwrap(transformer)
    block_ids = list(block_ids)
    had_record = "compression_record" in vars(model)
    old_record = getattr(model, "compression_record", None)
    adapter = adapter_for(model)
    if modification == "remove":
        refs = adapter.blocks(model)
        kinds = {kind: [r.module for r in refs if r.kind == kind] for kind in dict.fromkeys(r.kind for r in refs)}
        remove_blocks(model, block_ids, inplace=True) if block_ids else None
        undo = lambda: [adapter.set_blocks(model, kind, mods) for kind, mods in kinds.items()]  # noqa: E731
    elif modification == "svd":
        saved = [(t.parent, t.attr, t.layer) for t in plan(model, block_ids, c_fixed)] if block_ids else []
        svd_compress(model, block_ids, c_fixed, inplace=True) if block_ids else None
        undo = lambda: [setattr(parent, attr, layer) for parent, attr, layer in saved]  # noqa: E731
    else:
        raise ValueError(f"unknown modification {modification!r} (known: {', '.join(MODIFICATIONS)})")
    try:
        yield model
    finally:
        undo()
        if had_record:
            attach(model, old_record)
        elif "compression_record" in vars(model):
            del model.compression_record


@dataclass
class Measurement:
    """What a model with a set of blocks modified scores on the reference prompts."""

    cmmd: float
    clip_score: float
    removed_params: int
    geneval: float | None = None

    def to_json(self) -> dict:
        """Plain dict (None fields left out)."""
        return {k: v for k, v in vars(self).items() if v is not None}


class Probe:
    """Renders the reference prompts with chosen blocks modified and scores them (CMMD, CLIP score, GenEval).

    `renderer` holds the model to probe as its pipeline's transformer; `reference` is the image
    set CMMD compares with, its captions the prompts (image i from `seeds[i]`). `cache_file`
    (JSON) memoises measurements under `context`, a string naming everything that decides them.
    """

    def __init__(self, renderer, reference: ImageSet, seeds: list[int], *, cmmd, clip_score, modification: str,
                 c_fixed: float, geneval=None, geneval_seed: int = 0, cache_file: str | Path | None = None,
                 context: str = ""):
        self.renderer, self.reference, self.seeds = renderer, reference, seeds
        self.cmmd_ev, self.clip_ev, self.geneval_ev, self.geneval_seed = cmmd, clip_score, geneval, geneval_seed
        self.modification, self.c_fixed = modification, c_fixed
        self.blocks = [r.id for r in renderer.adapter.blocks(renderer.pipeline.transformer)]  # execution order
        self.cache_file, self.context = (Path(cache_file) if cache_file else None), context
        self._cache = self._read_cache()
        self.evaluations = 0  # subsets rendered in this process (cache hits excluded)

    @property
    def transformer(self) -> nn.Module:
        return self.renderer.pipeline.transformer

    def key(self, blocks, *, geneval: bool = False) -> str:
        """Cache key of a subset: modification, its parameter and the sorted block ids."""
        ids = ",".join(sorted(blocks, key=execution_order))
        c = f"@{self.c_fixed}" if self.modification == "svd" else ""
        return f"{self.modification}{c}:{ids}" + (":geneval" if geneval else "")

    def _read_cache(self) -> dict:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        data = json.loads(self.cache_file.read_text())
        return data.get("entries", {}) if data.get("context") == self.context else {}

    def _write_cache(self) -> None:
        if self.cache_file is None:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.cache_file) as f:
            # sorted: the file's bytes (a DVC output) do not depend on the order subsets were visited
            f.write(json.dumps({"context": self.context, "entries": self._cache}, indent=1, sort_keys=True).encode())

    def measure(self, blocks=(), *, desc: str | None = None) -> Measurement:
        """CMMD against the reference images and CLIP score against the prompts, `blocks` modified."""
        key = self.key(blocks)
        if key in self._cache:
            return Measurement(**self._cache[key])
        before = n_params(self.transformer)
        with modified(self.transformer, blocks, self.modification, self.c_fixed) as model:
            removed = before - n_params(model)
            images = self.render(list(self.reference.prompts), self.seeds, desc=desc)
        self.evaluations += 1
        cmmd, clip = self.score_images(images)
        m = Measurement(cmmd, clip, int(removed))
        self._cache[key] = m.to_json()
        self._write_cache()
        return m

    def score_images(self, images: np.ndarray) -> tuple[float, float]:
        """(CMMD against the reference images, CLIP score against the prompts) of one image per prompt."""
        cmmd = self.cmmd_ev.run(images, reference=self.reference)["cmmd"]
        clip = self.clip_ev.run(images, list(self.reference.prompts))["clip_score"]
        return float(cmmd), float(clip)

    def geneval(self, blocks=(), *, desc: str | None = None) -> float:
        """GenEval overall with `blocks` modified (the measured damage's ground truth)."""
        from ditcompress.metrics.benchmark import model_geneval

        key = self.key(blocks, geneval=True)
        if key not in self._cache:
            with modified(self.transformer, blocks, self.modification, self.c_fixed):
                value = model_geneval(self.renderer, self.geneval_ev, self.geneval_seed, desc=desc)["geneval/overall"]
            self._cache[key] = {"geneval": float(value)}
            self._write_cache()
        return self._cache[key]["geneval"]

    def render(self, prompts: list[str], seeds: list[int], *, desc: str | None = None) -> np.ndarray:
        """uint8 images of the model as it is now (inside `modified` for a candidate)."""
        bar = progress(total=len(seeds), desc=desc, unit="img", leave=False, disable=desc is None)
        try:
            return self.renderer.render(prompts, seeds, bar=bar)
        finally:
            bar.close()

    def removed_params(self, blocks) -> int:
        """Parameters the modification of `blocks` removes from the probed model."""
        before = n_params(self.transformer)
        with modified(self.transformer, blocks, self.modification, self.c_fixed) as model:
            return before - n_params(model)

