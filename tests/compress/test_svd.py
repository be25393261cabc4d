"""SVD compression (eq 4.7–4.9), per-part ratios (5.1.7), iterated SVD (4.4.3), GRASP selection (4.4.4)."""

import pytest
import torch
from torch import nn

from ditcompress.compress import (
    CompressionError, LowRankLinear, factorize, plan, remove_blocks, svd_compress, target_rank,
)
from ditcompress.compress.lowrank import layer_svd
from ditcompress.models.accounting import parameter_table
from ditcompress.models.tiny import tiny_transformer


def _relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def _low_rank_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, LowRankLinear)}


def test_full_rank_svd_reproduces_every_layer(adapter, model):
    x_seed = torch.Generator().manual_seed(0)
    for ref in adapter.blocks(model):
        for name, layer in ref.module.named_modules():
            if isinstance(layer, nn.Linear):
                x = torch.randn(3, layer.in_features, generator=x_seed)
                low = factorize(layer, min(layer.weight.shape))
                with torch.no_grad():
                    assert _relative_error(low(x), layer(x)) < 1e-5, f"{ref.id}.{name}"
                    assert _relative_error(low.to_dense().weight, layer.weight) < 1e-5


def test_truncation_is_the_best_rank_k_approximation():
    torch.manual_seed(0)
    layer = nn.Linear(12, 20)
    low = factorize(layer, 5)
    s = torch.linalg.svdvals(layer.weight.detach().double())
    err = (layer.weight.detach().double() - (low.A @ low.B).double()).pow(2).sum()
    torch.testing.assert_close(err, s[5:].pow(2).sum(), rtol=1e-5, atol=1e-7)  # Eckart–Young
    assert torch.equal(low.bias, layer.bias)  # eq 4.8 keeps b
    # balanced split A = U√Σ, B = √ΣVᵀ: AᵀA = BBᵀ = Σ_k
    sigma = torch.diag(s[:5].float())
    torch.testing.assert_close(low.A.T @ low.A, sigma, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(low.B @ low.B.T, sigma, atol=1e-5, rtol=1e-5)


def test_parameter_count_after_svd_equals_the_formula(adapter, model):
    ids = [b.id for b in adapter.blocks(model)][1:3]
    before = parameter_table(adapter, model)["total"]
    targets = plan(model, ids, 0.5)
    student, record = svd_compress(model, ids, 0.5)
    want = before
    for t in targets:
        n, m = t.layer.out_features, t.layer.in_features
        k = target_rank(n, m, 0.5)
        assert record.svd[t.key].rank == k
        want += k * (n + m) - n * m
    assert parameter_table(adapter, student)["total"] == want < before
    assert parameter_table(adapter, model)["total"] == before  # teacher untouched
    assert len(_low_rank_layers(student)) == len(targets) == len(record.svd)


def test_per_part_ratios_choose_each_layers_rank(adapter, model, family):
    ref = adapter.blocks(model)[-1]
    student, record = svd_compress(model, [ref.id], {"attn": 0.8, "mlp": 0.4})
    groups = {}
    for key, spec in record.svd.items():
        c = 0.8 if spec.rank == target_rank(spec.out, spec.inp, 0.8) else 0.4
        assert spec.rank == target_rank(spec.out, spec.inp, c)
        groups[key.removeprefix(ref.id + ".")] = c
    if family == "pixart":  # self- and cross-attention at 80 %, MLP at 40 %, modulation table untouched
        assert groups == {**{f"attn{i}.{p}": 0.8 for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")},
                          "ff.net.0.proj": 0.4, "ff.net.2": 0.4}
    else:  # single block: q/k/v attention, proj_mlp MLP, the fused projection counted as MLP
        assert groups == {"attn.to_q": 0.8, "attn.to_k": 0.8, "attn.to_v": 0.8, "proj_mlp": 0.4, "proj_out": 0.4}
    # a part's own key wins over its group; unknown keys and bad ratios name themselves
    part = "cross_attn" if family == "pixart" else "linear1"
    _, rec = svd_compress(model, [ref.id], {"attn": 0.5, part: 0.0})
    name = "attn2.to_q" if family == "pixart" else "attn.to_q"
    spec = rec.svd[f"{ref.id}.{name}"]
    assert spec.rank == target_rank(spec.out, spec.inp, 0.0) != target_rank(spec.out, spec.inp, 0.5)
    with pytest.raises(CompressionError, match="'ffn'"):
        svd_compress(model, [ref.id], {"ffn": 0.5})
    with pytest.raises(CompressionError, match=r"'mlp'.*\(got 1.0\)"):
        svd_compress(model, [ref.id], {"mlp": 1.0})


def test_svd_student_output_moves_with_the_ratio(adapter, model, inputs):
    latents, t, cond = inputs
    ids = [b.id for b in adapter.blocks(model)]
    with torch.no_grad():
        ref = adapter.predict(model, latents, t, cond)
        errs = [_relative_error(adapter.predict(svd_compress(model, ids, c)[0], latents, t, cond), ref)
                for c in (0.0, 0.5, 0.9)]
    assert errs[0] < errs[1] < errs[2]


def test_iterated_svd_refactorises_the_current_product(adapter, model):
    block = adapter.blocks(model)[0].id
    step1, rec1 = svd_compress(model, [block], 0.5)
    plain, _ = svd_compress(model, [block], 0.5)
    for (n1, a), (n2, b) in zip(_low_rank_layers(step1).items(), _low_rank_layers(plain).items()):
        assert n1 == n2 and torch.equal(a.A, b.A) and torch.equal(a.B, b.B)  # first step = plain SVD
    # the student trains: A_t, B_t drift away from the first factorisation
    with torch.no_grad():
        for layer in _low_rank_layers(step1).values():
            layer.A.add_(0.05 * torch.randn_like(layer.A))
    step2, rec2 = svd_compress(step1, [block], 0.5)
    step3, rec3 = svd_compress(step2, [block], 0.5)
    for key in rec1.svd:
        r1, r2, r3 = rec1.svd[key].rank, rec2.svd[key].rank, rec3.svd[key].rank
        assert r1 > r2 > r3 or r3 == 1
        assert r2 == max(1, r1 // 2)
    for name, layer in _low_rank_layers(step2).items():
        trained = _low_rank_layers(step1)[name]
        w_t = (trained.A @ trained.B).double()  # W_t = A_t B_t, then truncated SVD at the new rank
        u, s, vh = torch.linalg.svd(w_t)
        k = layer.rank
        torch.testing.assert_close((layer.A @ layer.B).double(), u[:, :k] @ torch.diag(s[:k]) @ vh[:k], atol=1e-5, rtol=1e-4)
        assert torch.equal(layer.bias, trained.bias)


def test_grasp_with_magnitude_scores_equals_plain_svd(adapter, model):
    ids = [adapter.blocks(model)[1].id]
    scores = {t.key: layer_svd(t.layer)[1] for t in plan(model, ids, 0.6)}
    plain, rec_plain = svd_compress(model, ids, 0.6)
    grasp, rec_grasp = svd_compress(model, ids, 0.6, scores=scores)
    for (n, a), (_, b) in zip(_low_rank_layers(plain).items(), _low_rank_layers(grasp).items()):
        assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B), n
    assert {k: v.rank for k, v in rec_plain.svd.items()} == {k: v.rank for k, v in rec_grasp.svd.items()}
    assert rec_grasp.steps[-1]["grasp"] is True


def test_grasp_keeps_the_highest_scoring_singular_values():
    torch.manual_seed(0)
    layer = nn.Linear(10, 8)
    u, s, vh = torch.linalg.svd(layer.weight.detach())
    scores = torch.tensor([0.0, 5, 0, 0, 3, 0, 0, 9])  # prefer σ_2, σ_5, σ_8 over the largest
    low = factorize(layer, 3, scores)
    keep = torch.tensor([1, 4, 7])
    torch.testing.assert_close(low.A @ low.B, u[:, keep] @ torch.diag(s[keep]) @ vh[keep], atol=1e-6, rtol=1e-5)


def test_svd_errors_name_the_value(adapter, model):
    with pytest.raises(CompressionError, match="unknown block id 'x.9'") as err:
        svd_compress(model, ["x.9"], 0.5)
    assert "\n" not in str(err.value)


def test_a_multiple_above_eq_4_9_keeps_the_eq_4_9_rank(adapter, model):
    ids = [b.id for b in adapter.blocks(model)]
    student, rec = svd_compress(model, ids[:1], 0.5, multiple=64)  # tiny layers are 16–64 wide: every k < 64
    assert rec.svd and all(spec.rank == target_rank(spec.out, spec.inp, 0.5) < 64 for spec in rec.svd.values())
    student, rec = svd_compress(model, ids[:1], 0.9)
    _, rec2 = svd_compress(student, ids[:1], 0.5, multiple=8)  # iterated from small ranks, still eq 4.9
    assert all(rec2.svd[k].rank == max(1, rec.svd[k].rank // 2) for k in rec.svd)


def test_iterated_svd_of_a_rank_40_layer_with_multiple_64():
    # 128-wide PixArt block: eq 4.9 at c = 0.375 gives 128²·0.625/256 = 40 for the 128×128 attention linears
    model = tiny_transformer("pixart-sigma", attention_head_dim=64, cross_attention_dim=128, num_layers=1)
    square = lambda rec: {k: v for k, v in rec.svd.items() if (v.out, v.inp) == (128, 128)}  # noqa: E731
    _, rec0 = svd_compress(model, ["0"], {"attn": 0.0}, multiple=64)
    assert square(rec0) and all(v.rank == 64 for v in square(rec0).values())  # 128²/256 = 64, a multiple
    step1, rec1 = svd_compress(model, ["0"], {"attn": 0.375}, multiple=64)
    assert square(rec1) and all(v.rank == 40 for v in square(rec1).values())  # 40 < 64: eq 4.9's rank
    step2, rec2 = svd_compress(step1, ["0"], {"attn": 0.5}, multiple=64)  # used to raise: 64 > rank 40
    assert all(v.rank == 20 for v in square(rec2).values())  # eq 4.9: ⌊40 (n+m) · 0.5 / (n+m)⌋
    assert all(v.rank == target_rank(v.out, v.inp, 0.5, 64, rank=rec1.svd[k].rank) for k, v in rec2.svd.items())
    before, after = _low_rank_layers(step1), _low_rank_layers(step2)
    for name, layer in after.items():
        w_t = (before[name].A @ before[name].B).double()  # W_t = A_t B_t, then truncated SVD at the new rank
        u, s, vh = torch.linalg.svd(w_t)
        k = layer.rank
        want = u[:, :k] @ torch.diag(s[:k]) @ vh[:k]
        torch.testing.assert_close((layer.A @ layer.B).double(), want, atol=1e-5, rtol=1e-4)


def test_svd_then_removal_drops_the_removed_blocks_layers(adapter, model):
    ids = [b.id for b in adapter.blocks(model)]
    student, rec = svd_compress(model, ids[:2], 0.5)
    student, rec = remove_blocks(student, [ids[0]])
    assert rec.removed == [ids[0]] and rec.svd and all(k.startswith(ids[1] + ".") for k in rec.svd)
