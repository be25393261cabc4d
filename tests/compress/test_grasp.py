"""GRASP scores (4.4.4) against the closed form ∂L/∂σ_i = u_iᵀ (∂L/∂W) v_i."""

import torch

from ditcompress.compress import grasp_scores, plan
from ditcompress.compress.lowrank import layer_svd

SCHEDULER = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}


def test_grasp_scores_match_the_closed_form_and_restore_the_model(family, adapter, model, inputs):
    latents, _, cond = inputs
    objective = adapter.objective(SCHEDULER)
    timesteps = torch.tensor([5, 300, 900]) if family == "pixart" else torch.tensor([0.05, 0.3, 0.9])
    block = adapter.blocks(model)[-1].id
    with torch.no_grad():
        before = adapter.predict(model, latents, timesteps[:2], cond)
    scores = grasp_scores(model, objective, [(latents, cond)], [block], 0.5, timesteps=timesteps,
                          num_samples=2, timestep_batch=2, generator=torch.Generator().manual_seed(3))

    # independent computation on the dense model with the same noise draws
    targets = plan(model, [block], 0.5)
    for t in targets:
        t.layer.weight.grad = None
    g = torch.Generator().manual_seed(3)
    want = {t.key: 0 for t in targets}
    for i in range(2):
        for start in (0, 2):
            ts = timesteps[start:start + 2]
            x0 = latents[i:i + 1].expand(len(ts), *latents.shape[1:])
            noise = torch.randn(x0.shape, generator=g)
            c = cond.select(torch.full((len(ts),), i))
            adapter.task_loss(model, objective, x0, c, t=ts, noise=noise).sum().backward()
        for t in targets:
            u, _, vh = layer_svd(t.layer)
            want[t.key] = want[t.key] + torch.einsum("ni,nm,im->i", u, t.layer.weight.grad, vh).abs() / 2
            t.layer.weight.grad = None
    assert set(scores) == set(want) and len(scores) > 0
    for key in scores:
        torch.testing.assert_close(scores[key], want[key].float(), rtol=2e-3, atol=1e-7)
        assert scores[key].max() > 0

    # the model is the dense teacher again, with its trainable flags intact
    with torch.no_grad():
        assert torch.equal(adapter.predict(model, latents, timesteps[:2], cond), before)
    assert all(p.requires_grad for p in model.parameters())
