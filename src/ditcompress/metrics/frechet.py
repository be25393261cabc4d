"""Fréchet distance (eq 2.91): FID on Inception features, or on CLIP features as `clip_fd`.

FID needs torch-fidelity's Inception-v3 weights (`weights-inception-2015-12-05-6726825d.pth`)
at a local path, loaded through torchmetrics' `NoTrainInceptionV3`. Without them the `fid`
evaluator computes the Fréchet distance on the configured CLIP's image embeddings instead and
reports it as `clip_fd`, never as `fid`: the numbers are not comparable with published FIDs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ditcompress.metrics.base import Evaluator, ImageSet, MetricsError, as_image_list, resolve_device
from ditcompress.metrics.cache import EmbeddingCache, default_cache
from ditcompress.metrics.config import CMMD_CLIP
from ditcompress.utils.logging import get_logger

log = get_logger(__name__)


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), with the trace of the root from eigenvalues.

    Same computation as torchmetrics' `_compute_fid` (float64): Tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)).
    """
    mu1, mu2 = (torch.as_tensor(np.asarray(m), dtype=torch.float64) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(np.asarray(s), dtype=torch.float64) for s in (sigma1, sigma2))
    root_trace = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * root_trace)


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (N - 1) covariance of `(N, D)` features, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise MetricsError(f"frechet_distance: need at least 2 feature vectors (got shape {f.shape})")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets `(N, D)`, `(M, D)`."""
    return frechet_distance_from_stats(*feature_stats(a), *feature_stats(b))


class ClipFDEvaluator(Evaluator):
    """Fréchet distance on CLIP image embeddings (the CMMD embeddings; shares their cache)."""

    name = "clip_fd"
    needs_reference = True

    def __init__(self, clip_path: str = CMMD_CLIP, *, device: str = "auto",
                 batch_size: int = 32, cache: EmbeddingCache | None = None):
        from ditcompress.metrics.cmmd import CMMDEvaluator

        # same embedder and cache keys as CMMD: a suite with both embeds each set once
        self._embedder = CMMDEvaluator(clip_path, device=device, batch_size=batch_size, cache=cache)
        self.cache = self._embedder.cache

    def run(self, images, prompts=None, items=None, *, reference: ImageSet | None = None, set_id=None):
        """{"clip_fd": value}."""
        if reference is None:
            raise MetricsError("clip_fd: needs a reference image set (reference=ImageSet(...))")
        ref = self._embedder.embed(reference.images, reference.id)
        return {"clip_fd": frechet_distance(ref, self._embedder.embed(images, set_id))}


class InceptionFeatures:
    """torch-fidelity Inception-v3 pool features (2048-d) through torchmetrics, from local weights."""

    def __init__(self, weights: str | Path, device: torch.device):
        if not Path(weights).is_file():
            raise MetricsError(f"{weights}: Inception weights file not found (fid.inception_weights)")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(weights)).to(device)
        except ModuleNotFoundError:
            raise MetricsError("fid: torch-fidelity is not installed (pip install torch-fidelity)") from None
        self.device, self.id = device, f"inception:{Path(weights).resolve()}"

    @torch.no_grad()
    def __call__(self, images, batch_size: int) -> np.ndarray:
        """Features `(N, 2048)` of RGB uint8 images (any size; the network resizes to 299)."""
        out = []
        for im in as_image_list(images):  # one at a time: images may differ in size
            x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].to(self.device)
            out.append(self.net(x).double().cpu())
        return torch.cat(out).numpy()


class FIDEvaluator(Evaluator):
    """FID with Inception weights from a local path; otherwise the CLIP Fréchet distance (`clip_fd`)."""

    name = "fid"
    needs_reference = True

    def __init__(self, inception_weights: str | None = None, *, clip_path: str = CMMD_CLIP,
                 device: str = "auto", batch_size: int = 32, cache: EmbeddingCache | None = None):
        self.device, self.batch_size = resolve_device(device), batch_size
        self.cache = cache if cache is not None else default_cache()
        self.inception_weights = inception_weights
        if inception_weights is None:
            log.warning("fid: no inception_weights configured; reporting the CLIP Fréchet distance as clip_fd")
            self._fallback = ClipFDEvaluator(clip_path, device=device, batch_size=batch_size, cache=cache)
        elif not Path(inception_weights).is_file():
            raise MetricsError(f"{inception_weights}: Inception weights file not found (fid.inception_weights)")
        self._net: InceptionFeatures | None = None

    def run(self, images, prompts=None, items=None, *, reference: ImageSet | None = None, set_id=None):
        """{"fid": value}, or {"clip_fd": value} without Inception weights."""
        if self.inception_weights is None:
            return self._fallback.run(images, prompts, items, reference=reference, set_id=set_id)
        if reference is None:
            raise MetricsError("fid: needs a reference image set (reference=ImageSet(...))")
        if self._net is None:
            self._net = InceptionFeatures(self.inception_weights, self.device)
        feats = [self.cache.get_or_compute(self._net.id, sid, lambda ims=ims: self._net(ims, self.batch_size))
                 for ims, sid in ((reference.images, reference.id), (images, set_id))]
        return {"fid": frechet_distance(*feats)}
