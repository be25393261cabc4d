"""Criteria against closed forms and references: magnitude, linear CKA, rank sum, CKA/RMS collection."""

import math

import numpy as np
import pytest
import torch

from ditcompress.compress import svd_compress
from ditcompress.score import block_magnitude, linear_cka, rank_sum, spearman
from ditcompress.score.criteria import collect_features


def test_magnitude_equals_a_direct_computation(adapter, model):
    got = block_magnitude(model)
    for ref in adapter.blocks(model):
        weights = [m.weight for m in ref.module.modules() if isinstance(m, torch.nn.Linear)]
        want = math.sqrt(sum(float(w.detach().double().pow(2).sum()) for w in weights))
        assert got[ref.id] == pytest.approx(want, rel=1e-12)
    assert list(got) == [r.id for r in adapter.blocks(model)]


def test_magnitude_of_a_factorised_block_is_that_of_its_product(adapter, model):
    block = adapter.blocks(model)[0].id
    student, _ = svd_compress(model, [block], 0.5)
    from ditcompress.compress import LowRankLinear

    direct = 0.0
    for m in adapter.block_by_id(student, block).module.modules():
        if isinstance(m, LowRankLinear):
            direct += float((m.A.double() @ m.B.double()).pow(2).sum())
        elif isinstance(m, torch.nn.Linear):
            direct += float(m.weight.double().pow(2).sum())
    assert block_magnitude(student)[block] == pytest.approx(math.sqrt(direct), rel=1e-10)


def numpy_cka(x, y):
    """Eq 4.3 literally: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = XXᵀ, L = YYᵀ, H = I − 11ᵀ/n."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.mark.parametrize("n,d", [(20, 7), (6, 30)])  # both code paths: covariance (n > d) and Gram (n ≤ d)
def test_cka_equals_the_numpy_reference(n, d):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.5 * rng.normal(size=(n, 1))
    assert linear_cka(x, y) == pytest.approx(numpy_cka(x, y), rel=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)


def test_cka_is_invariant_to_isotropic_scaling_and_rotation():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))  # an orthogonal matrix
    base = linear_cka(x, y)
    assert linear_cka(3.5 * x, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x @ q, 0.2 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, y + 4.0) == pytest.approx(base, rel=1e-10)  # centring removes mean shifts
    assert 0 <= base <= 1


def test_cka_of_constant_features_is_nan():
    assert math.isnan(linear_cka(np.ones((5, 3)), np.random.default_rng(0).normal(size=(5, 3))))


def test_rank_sum_with_ties_takes_average_ranks():
    cmmd = {"a": 0.1, "b": 0.1, "c": 0.5, "d": 0.3}  # a, b tie for ranks 1-2
    clip = {"a": 60.0, "b": 70.0, "c": 50.0, "d": 70.0}  # b, d tie for ranks 1-2 (highest is best)
    assert rank_sum(cmmd, clip) == {"a": 1.5 + 3, "b": 1.5 + 1.5, "c": 4 + 4, "d": 3 + 1.5}
    with pytest.raises(ValueError, match="different blocks"):
        rank_sum(cmmd, {"a": 1.0})


def test_spearman_matches_closed_form():
    a = {"0": 1.0, "1": 2.0, "2": 3.0, "3": 4.0}
    assert spearman(a, {"0": 10.0, "1": 20.0, "2": 30.0, "3": 40.0}) == pytest.approx(1.0)
    assert spearman(a, {"0": 4.0, "1": 3.0, "2": 2.0, "3": 1.0}) == pytest.approx(-1.0)
    # one swap of neighbours: rho = 1 - 6·Σd² / (n(n²−1)) = 1 - 6·2/60
    assert spearman(a, {"0": 2.0, "1": 1.0, "2": 3.0, "3": 4.0}) == pytest.approx(0.8)
    assert math.isnan(spearman(a, {"0": 1.0, "1": 1.0, "2": 1.0, "3": 1.0}))


def test_collect_features_records_cka_and_rms_per_block_and_timestep(family, adapter, model, inputs):
    latents, t, cond = inputs
    ids = [r.id for r in adapter.blocks(model)]
    seen = {}
    with torch.no_grad(), collect_features(adapter, model, ids) as stats, \
            adapter.hook_blocks(model, ids, lambda b, i, o: seen.__setitem__(b, (i, o))):
        adapter.predict(model, latents, t[:1].expand(2), cond)
    step = stats.timesteps[0]
    assert len(stats.timesteps) == 1
    for b in ids:
        inp, out = seen[b]
        want = np.mean([numpy_cka(inp.image[i].double().numpy(), out.image[i].double().numpy()) for i in range(2)])
        assert stats.mean("cka", b) == pytest.approx(want, rel=1e-9)
        assert stats.mean("cka", b, step) == pytest.approx(want, rel=1e-9)
        rms = np.mean([float(out.image[i].double().pow(2).mean().sqrt()) for i in range(2)])
        assert stats.mean("rms", b) == pytest.approx(rms, rel=1e-9)
        assert stats.has("cka_text", b) == (family == "flux")
