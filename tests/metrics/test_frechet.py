"""Fréchet distance against the closed form with scipy's matrix square root; FID's CLIP fallback."""

import numpy as np
import pytest
from scipy import linalg

from ditcompress.metrics import ImageSet, MetricsError, frechet_distance, get_evaluator


def closed_form(a, b):
    """Eq 2.91 with scipy.linalg.sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root))


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 1.0
    assert frechet_distance(a, b) == pytest.approx(closed_form(a, b), rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_gaussians_with_known_parameters():
    """Same covariance, shifted mean: the distance is the squared shift."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(100, 4))
    assert frechet_distance(a, a + np.array([3.0, 0, 0, 4.0])) == pytest.approx(25.0, rel=1e-8)


def test_fid_without_inception_weights_reports_clip_fd(tiny_clip_dir, images):
    ev = get_evaluator("fid", inception_weights=None, clip_path=tiny_clip_dir, device="cpu")
    out = ev.run(images[4:], reference=ImageSet(images[:4], id="ref"))
    assert set(out) == {"clip_fd"}  # never reported as "fid"
    direct = get_evaluator("clip_fd", clip_path=tiny_clip_dir, device="cpu")
    assert out == direct.run(images[4:], reference=ImageSet(images[:4], id="ref"))


def test_fid_with_missing_weights_file_names_it(tmp_path):
    with pytest.raises(MetricsError, match="inception.pth: Inception weights file not found") as err:
        get_evaluator("fid", inception_weights=str(tmp_path / "inception.pth"))
    assert "\n" not in str(err.value)
