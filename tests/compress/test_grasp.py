"""GRASP scores (4.4.4): the closed form ∂L/∂σ_i = u_iᵀ (∂L/∂W) v_i and the accumulation over images."""

import pytest
import torch
from torch import nn

import ditcompress.compress.grasp as grasp_module
from ditcompress.compress import CompressionError, factorize, grasp_scores, plan
from ditcompress.compress.lowrank import layer_svd
from ditcompress.compress.svd import Target
from ditcompress.models.base import Conditioning

SCHEDULER = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}


def test_grasp_scores_match_the_closed_form_and_restore_the_model(family, adapter, model, inputs):
    latents, _, cond = inputs
    objective = adapter.objective(SCHEDULER)
    timesteps = torch.tensor([5, 300, 900]) if family == "pixart" else torch.tensor([0.05, 0.3, 0.9])
    block = adapter.blocks(model)[-1].id
    with torch.no_grad():
        before = adapter.predict(model, latents, timesteps[:2], cond)
    kw = dict(timesteps=timesteps, num_samples=2, timestep_batch=2)
    signed = grasp_scores(model, objective, [(latents, cond)], [block], 0.5, **kw,
                          generator=torch.Generator().manual_seed(3))
    per_image = grasp_scores(model, objective, [(latents, cond)], [block], 0.5, **kw,
                             generator=torch.Generator().manual_seed(3), accumulate="abs_per_image")

    # independent computation on the dense model with the same noise draws: g_j = Σ_t u_iᵀ ∂L/∂W v_i per image j
    targets = plan(model, [block], 0.5)
    for t in targets:
        t.layer.weight.grad = None
    g = torch.Generator().manual_seed(3)
    grads = {t.key: [] for t in targets}
    for i in range(2):
        for start in (0, 2):
            ts = timesteps[start:start + 2]
            x0 = latents[i:i + 1].expand(len(ts), *latents.shape[1:])
            noise = torch.randn(x0.shape, generator=g)
            c = cond.select(torch.full((len(ts),), i))
            adapter.task_loss(model, objective, x0, c, t=ts, noise=noise).sum().backward()
        for t in targets:
            u, _, vh = layer_svd(t.layer)
            grads[t.key].append(torch.einsum("ni,nm,im->i", u, t.layer.weight.grad, vh))
            t.layer.weight.grad = None
    assert set(signed) == set(per_image) == set(grads) and len(grads) > 0
    for key, (g0, g1) in grads.items():
        scale = (g0.abs() + g1.abs()) / 2
        # the two parametrisations round differently; bound the error by the size of the summed terms
        assert ((signed[key] - ((g0 + g1) / 2).abs()).abs() <= 2e-3 * scale + 1e-7).all(), key
        assert ((per_image[key] - scale).abs() <= 2e-3 * scale + 1e-7).all(), key
        assert per_image[key].max() > 0 and (signed[key] <= per_image[key] + 1e-6).all()  # |mean| ≤ mean |·|

    # the model is the dense teacher again, with its trainable flags intact
    with torch.no_grad():
        assert torch.equal(adapter.predict(model, latents, timesteps[:2], cond), before)
    assert all(p.requires_grad for p in model.parameters())


class _ToyModel(nn.Module):
    """One bias-free linear layer W = diag(4, 3, 2, 1): singular vectors e_i, singular values 4..1."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.layer.weight.copy_(torch.diag(torch.tensor([4.0, 3, 2, 1], dtype=torch.float64)))


class _ToyAdapter:
    """L_task = t · Σ_a (W x)_a, so Σ_t ∂L/∂σ_i = (Σ_t t) · (1ᵀu_i)(v_iᵀx) = x_i for Σ_t t = 1."""

    def task_loss(self, model, objective, x0, cond, *, t, noise, guidance):
        return t * model.layer(x0).sum(-1)


def test_signed_mean_cancels_where_per_image_magnitudes_do_not(monkeypatch):
    model = _ToyModel()
    monkeypatch.setattr(grasp_module, "adapter_for", lambda m: _ToyAdapter())
    target = Target("toy.layer", model, "layer", model.layer, 0.5, 2)
    monkeypatch.setattr(grasp_module, "plan", lambda m, ids, ratio: [target])
    # image a pulls σ_3 up by 5, image b down by 5: per image it is the strongest, on average it cancels
    latents = torch.tensor([[0.5, 2.0, 5.0, 1.0], [0.5, 2.0, -5.0, 1.0]], dtype=torch.float64)
    cond = Conditioning(torch.zeros(2, 1, 1))
    timesteps = torch.tensor([0.25, 0.75], dtype=torch.float64)  # Σ_t t = 1 exactly

    def scores(accumulate):
        return grasp_scores(model, None, [(latents, cond)], ["toy"], 0.5, timesteps=timesteps,
                            accumulate=accumulate)["toy.layer"].double()

    signed, per_image = scores("signed_mean"), scores("abs_per_image")
    tol = dict(rtol=0, atol=1e-6)  # float32 output of exact float64 values
    want_signed, want_per_image = [0.5, 2.0, 0.0, 1.0], [0.5, 2.0, 5.0, 1.0]  # |mean_j g_j| and mean_j |g_j|
    torch.testing.assert_close(signed, torch.tensor(want_signed, dtype=torch.float64), **tol)
    torch.testing.assert_close(per_image, torch.tensor(want_per_image, dtype=torch.float64), **tol)

    # keeping 2 of 4: magnitude keeps σ = 4, 3; the signed mean keeps σ = 3, 1; per-image |g| keeps σ = 3, 2
    kept = {name: factorize(model.layer, 2, s).to_dense().weight.detach()
            for name, s in (("magnitude", None), ("signed", signed), ("per_image", per_image))}
    want = {"magnitude": [4.0, 3, 0, 0], "signed": [0.0, 3, 0, 1], "per_image": [0.0, 3, 2, 0]}
    for name, diagonal in want.items():
        torch.testing.assert_close(kept[name], torch.diag(torch.tensor(diagonal, dtype=torch.float64)), msg=name)


def test_unknown_accumulation_is_a_one_line_error():
    with pytest.raises(CompressionError, match=r"accumulate must be one of .*\(got 'abs'\)") as err:
        grasp_scores(_ToyModel(), None, [], ["toy"], 0.5, timesteps=torch.tensor([0.5]), accumulate="abs")
    assert "\n" not in str(err.value)
