"""CMMD against the reference formula, its estimators, and the evaluator's embedding cache."""

import numpy as np
import pytest

from ditcompress.metrics import EmbeddingCache, ImageSet, MetricsError, cmmd, get_evaluator


def reference_mmd(x, y, sigma=10.0, scale=1000.0):
    """google-research/cmmd distance.py `mmd`, transcribed to numpy."""
    x_sq, y_sq = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = 1 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return scale * (k_xx + k_yy - 2 * k_xy)


def eq_2_92(x, y, sigma=10.0, scale=1000.0):
    """Thesis eq 2.92 with explicit loops over i != j."""
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return scale * (xx + yy - 2 * xy)


def unit(rng, n, d=16, shift=0.0):
    """L2-normalised Gaussian embeddings, optionally shifted along the first axis before normalising."""
    e = rng.normal(size=(n, d))
    e[:, 0] += shift
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_cmmd_matches_reference_formula():
    rng = np.random.default_rng(0)
    x, y = unit(rng, 40), unit(rng, 30, shift=0.5)
    assert cmmd(x, y) == pytest.approx(reference_mmd(x, y), abs=1e-6, rel=1e-9)
    assert cmmd(x, y, sigma=0.7, scale=1.0) == pytest.approx(reference_mmd(x, y, 0.7, 1.0), abs=1e-9)


def test_unbiased_cmmd_is_eq_2_92():
    rng = np.random.default_rng(1)
    x, y = unit(rng, 12), unit(rng, 9, shift=1.0)
    assert cmmd(x, y, unbiased=True) == pytest.approx(eq_2_92(x, y), abs=1e-6, rel=1e-9)


def test_cmmd_of_a_set_with_itself():
    x = unit(np.random.default_rng(2), 50)
    assert cmmd(x, x) == 0.0  # reference estimator: K_xx, K_yy, K_xy are the same matrix
    unbiased = cmmd(x, x, unbiased=True)  # diagonal dropped: 1000 * (mean off-diag K - mean K) / ... != 0
    assert unbiased != 0.0 and unbiased == pytest.approx(eq_2_92(x, x), abs=1e-6)


def test_cmmd_grows_with_a_mean_shift():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 8))
    direction = np.eye(8)[0]
    values = [cmmd(x, x + s * direction, sigma=2.0) for s in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert values[0] == 0.0 and all(a < b for a, b in zip(values, values[1:]))
    other = rng.normal(size=(64, 8))  # an independent sample behaves the same
    shifted = [cmmd(x, other + s * direction, sigma=2.0) for s in (0.0, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(shifted, shifted[1:]))


def test_cmmd_rejects_mismatched_embeddings():
    with pytest.raises(MetricsError, match="cmmd"):
        cmmd(np.zeros((3, 4)), np.zeros((3, 5)))


def test_cmmd_evaluator_embeds_the_reference_once(tiny_clip_dir, images):
    cache = EmbeddingCache()
    ev = get_evaluator("cmmd", clip_path=tiny_clip_dir, device="cpu", cache=cache)
    reference = ImageSet(images[:4], id="teacher")
    assert ev.run(images[:4], reference=reference, set_id="teacher") == {"cmmd": 0.0}
    first = ev.run(images[4:], reference=reference)
    assert cache.misses == 2  # teacher once (shared by both calls), variant once
    for variant in range(3):  # e.g. block-removal variants: only the variant is embedded
        ev.run(images[variant:variant + 4], reference=reference)
    assert cache.misses == 5
    assert first["cmmd"] > 0
    unbiased = get_evaluator("cmmd", clip_path=tiny_clip_dir, device="cpu", unbiased=True, cache=cache)
    assert set(unbiased.run(images[4:], reference=reference)) == {"cmmd_unbiased"}


def test_cmmd_embeddings_follow_the_reference_preprocessing(tiny_clip_dir, images):
    """Centre crop + bicubic resize to the model size, CLIP mean/std, L2-normalised output."""
    import torch
    from PIL import Image

    from ditcompress.metrics.clip import HFClip

    clip = HFClip(tiny_clip_dir, "cpu")
    emb = clip.embed_images(images[:2], "cmmd")
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    im = Image.fromarray(images[0]).crop((4, 0, 44, 40)).resize((32, 32), Image.BICUBIC)  # 48x40 -> 40x40 centre
    x = torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = clip.model.get_image_features(pixel_values=x)
    f = (out if isinstance(out, torch.Tensor) else out.pooler_output)[0].numpy()
    assert np.allclose(emb[0], f / np.linalg.norm(f), atol=1e-5)


def test_missing_clip_is_a_one_line_error(tmp_path, images):
    ev = get_evaluator("cmmd", clip_path=str(tmp_path / "no_clip"), device="cpu")
    with pytest.raises(MetricsError, match="no_clip: cannot load a CLIP model") as err:
        ev.run(images[:2], reference=ImageSet(images[2:4]))
    assert "\n" not in str(err.value)
