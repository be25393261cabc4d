"""Adapters: objectives against closed forms, predict against the raw model call, ids, hooks."""

import math

import pytest
import torch
from diffusers import FluxPipeline

from ditcompress.models import get_adapter
from ditcompress.models.tiny import tiny_inputs, tiny_transformer

PIXART_SCHEDULER = {  # PixArt-Σ's scheduler/scheduler_config.json (DPM-Solver), training keys
    "_class_name": "DPMSolverMultistepScheduler", "beta_end": 0.02, "beta_schedule": "linear",
    "beta_start": 0.0001, "num_train_timesteps": 1000, "prediction_type": "epsilon",
}


def test_registry_names():
    assert get_adapter("pixart").name == "pixart" and get_adapter("flux").name == "flux"
    with pytest.raises(KeyError, match="'sdxl'"):
        get_adapter("sdxl")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_objective_matches_closed_form(prediction_type):
    obj = get_adapter("pixart").objective({**PIXART_SCHEDULER, "prediction_type": prediction_type})
    x0, eps, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor([0, 999])
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)[t].float().view(2, 1, 1, 1)
    torch.testing.assert_close(obj.add_noise(x0, eps, t), abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    want = eps if prediction_type == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
    torch.testing.assert_close(obj.target(x0, eps, t), want)
    ts = obj.sample_t(4000, generator=torch.Generator().manual_seed(0))
    assert ts.dtype == torch.long and ts.min() >= 0 and ts.max() <= 999 and abs(ts.float().mean() - 499.5) < 15


def test_ddpm_logit_normal_timesteps_follow_the_closed_form():
    obj = get_adapter("pixart").objective(PIXART_SCHEDULER, weighting="logit_normal")
    ts = obj.sample_t(40000, generator=torch.Generator().manual_seed(0))
    assert ts.dtype == torch.long and ts.min() >= 0 and ts.max() <= 999
    # t = ⌊1000·sigmoid(z)⌋, z ~ N(0, 1): P(t < 1000·sigmoid(c)) = Φ(c)
    for c, phi in ((-1.0, 0.1587), (0.0, 0.5), (1.5, 0.9332)):
        bound = 1000 * torch.sigmoid(torch.tensor(c)).item()
        assert abs((ts.float() < bound).float().mean().item() - phi) < 0.01
    with pytest.raises(ValueError, match="'beta'"):
        get_adapter("pixart").objective(PIXART_SCHEDULER, weighting="beta")


@pytest.mark.parametrize("weighting", ["uniform", "logit_normal"])
def test_flow_objective_is_straight_path(weighting):
    obj = get_adapter("flux").objective({}, weighting=weighting)
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = torch.tensor([0.0, 0.25, 1.0])
    xt = obj.add_noise(x0, eps, sigma)
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[2], eps[2])
    # stepping back along the velocity from x_t lands on the data: x0 = x_t − σ·(ε − x0)
    torch.testing.assert_close(xt - sigma.view(-1, 1, 1, 1) * obj.target(x0, eps, sigma), x0)
    s = obj.sample_t(20000, generator=torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() < 1 and abs(s.median() - 0.5) < 0.02
    # logit-normal concentrates σ in the middle: P(0.25 < σ < 0.75) = 0.73 vs 0.5 for uniform
    mid = ((s > 0.25) & (s < 0.75)).float().mean().item()
    assert abs(mid - (0.5 if weighting == "uniform" else 0.73)) < 0.02


def test_pixart_predict_is_the_mean_half_of_the_raw_output():
    adapter, model = get_adapter("pixart"), tiny_transformer("pixart-sigma")
    latents, t, cond = tiny_inputs("pixart")
    raw = model(latents, encoder_hidden_states=cond.prompt_embeds, encoder_attention_mask=cond.attention_mask,
                timestep=t, added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    assert raw.shape[1] == 8  # learned sigma, as the real PixArt-Σ
    with torch.no_grad():
        torch.testing.assert_close(adapter.predict(model, latents, t, cond), raw[:, :4].detach(), rtol=0, atol=0)
    # the mask matters: unmasking the padded tokens changes the prediction of that sample only
    cond2 = cond.select(slice(None))
    cond2.attention_mask = torch.ones_like(cond.attention_mask)
    with torch.no_grad():
        d = (adapter.predict(model, latents, t, cond2) - adapter.predict(model, latents, t, cond)).abs().flatten(1).amax(1)
    assert d[0] > 1e-4 and d[1] == 0


def test_flux_predict_packs_and_passes_sigma_and_guidance():
    latents, t, cond = tiny_inputs("flux")
    seen = {}

    class Echo(torch.nn.Module):
        """Stands in for the transformer: returns its packed input tokens."""
        config = type("C", (), {"guidance_embeds": True})()

        def forward(self, hidden_states, **kw):
            seen.update(kw)
            return (hidden_states,)

    out = get_adapter("flux").predict(Echo(), latents, t, cond)
    torch.testing.assert_close(out, latents, rtol=0, atol=0)  # pack -> unpack is the identity
    torch.testing.assert_close(seen["timestep"], t)  # σ in [0, 1]; the model multiplies by 1000
    torch.testing.assert_close(seen["guidance"], torch.full((2,), 3.5))
    h, w = latents.shape[-2:]
    torch.testing.assert_close(seen["img_ids"], FluxPipeline._prepare_latent_image_ids(2, h // 2, w // 2, "cpu", torch.float32))
    assert seen["txt_ids"].abs().sum() == 0 and seen["txt_ids"].shape == (5, 3)


def test_flux_predict_matches_the_pipeline_call():
    adapter, model = get_adapter("flux"), tiny_transformer("flux-dev")
    latents, t, cond = tiny_inputs("flux")
    b, c, h, w = latents.shape
    packed = FluxPipeline._pack_latents(latents, b, c, h, w)
    with torch.no_grad():
        raw = model(packed, encoder_hidden_states=cond.prompt_embeds, pooled_projections=cond.pooled, timestep=t,
                    img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32),
                    txt_ids=torch.zeros(5, 3), guidance=torch.full((b,), 2.0)).sample
        out = adapter.predict(model, latents, t, cond, guidance=2.0)
    torch.testing.assert_close(out, FluxPipeline._unpack_latents(raw, h * 8, w * 8, 8), rtol=0, atol=0)


def test_task_loss_is_zero_for_a_perfect_predictor(family, adapter, inputs):
    latents, _, cond = inputs
    obj = adapter.objective(PIXART_SCHEDULER) if family == "pixart" else adapter.objective({})
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(latents.shape, generator=g)
    t = obj.sample_t(2, generator=g)
    # a predictor that returns the true target gives zero loss; a zero predictor gives mean(target²)
    target = obj.target(latents, noise, t)
    adapter_ = type(adapter)()
    adapter_.predict = lambda m, x, t_, c, guidance=None: target
    assert adapter_.task_loss(None, obj, latents, cond, t=t, noise=noise).abs().max() == 0
    adapter_.predict = lambda m, x, t_, c, guidance=None: torch.zeros_like(target)
    torch.testing.assert_close(adapter_.task_loss(None, obj, latents, cond, t=t, noise=noise),
                               target.pow(2).flatten(1).mean(1))


def test_block_ids_are_stable_names(family, adapter, model):
    ids = [b.id for b in adapter.blocks(model)]
    assert ids == (["0", "1", "2", "3"] if family == "pixart" else ["double.0", "double.1", "single.0", "single.1"])
    with pytest.raises(KeyError, match="'7'"):
        adapter.block_by_id(model, "7")


def test_capture_features_records_each_blocks_output(family, adapter, model, inputs):
    latents, t, cond = inputs
    refs = adapter.blocks(model)
    returned = {}
    for ref in refs:  # an independent record of what each block returned
        ref.module.register_forward_hook(lambda m, a, out, i=ref.id: returned.__setitem__(i, out))
    with torch.no_grad(), adapter.capture_features(model, [r.id for r in refs[1:]]) as feats:
        adapter.predict(model, latents, t, cond)
    assert set(feats) == {r.id for r in refs[1:]}
    for ref in refs[1:]:
        out = returned[ref.id]
        if family == "pixart":
            assert feats[ref.id].image is out and feats[ref.id].text is None
        else:  # Flux blocks return (text, image)
            assert feats[ref.id].image is out[1] and feats[ref.id].text is out[0]
            assert feats[ref.id].text.shape[1] == 5 and feats[ref.id].image.shape[1] == 12
    n_img, n_txt = feats[refs[1].id].image[0].numel(), 0 if family == "pixart" else 5 * 32
    assert feats[refs[1].id].flat().shape == (2, n_img + n_txt)


def test_hook_blocks_sees_each_blocks_input_as_the_previous_output(family, adapter, model, inputs):
    latents, t, cond = inputs
    ids = [r.id for r in adapter.blocks(model)]
    seen = {}
    with torch.no_grad(), adapter.hook_blocks(model, ids, lambda b, i, o: seen.__setitem__(b, (i, o))):
        adapter.predict(model, latents, t, cond)
    # consecutive blocks of one kind: the input of block k+1 is the output of block k
    for a, b in [(ids[0], ids[1])] + ([] if family == "pixart" else [(ids[2], ids[3])]):
        assert seen[b][0].image is seen[a][1].image
        if family == "flux":
            assert seen[b][0].text is seen[a][1].text
    assert (seen[ids[0]][0].text is None) == (family == "pixart")


def test_hook_blocks_replacing_the_output_by_the_input_equals_removing_the_block(family, adapter, model, inputs):
    from ditcompress.compress import remove_blocks

    latents, t, cond = inputs
    victim = adapter.blocks(model)[1].id
    with torch.no_grad():
        with adapter.hook_blocks(model, [victim], lambda b, i, o: i):
            skipped = adapter.predict(model, latents, t, cond)
        removed = adapter.predict(remove_blocks(model, [victim])[0], latents, t, cond)
        full = adapter.predict(model, latents, t, cond)
    torch.testing.assert_close(skipped, removed, rtol=0, atol=0)
    assert not torch.equal(skipped, full)  # and the hook was gone again


def test_capture_features_removes_hooks_even_on_error(adapter, model):
    ids = [b.id for b in adapter.blocks(model)]
    with pytest.raises(RuntimeError, match="boom"):
        with adapter.capture_features(model, ids):
            raise RuntimeError("boom")
    assert all(not b.module._forward_hooks for b in adapter.blocks(model))


def test_capture_features_sees_through_torch_compile_wrapper(adapter, model, inputs):
    wrapped = torch.nn.Module()
    wrapped._orig_mod = model  # what torch.compile's OptimizedModule holds
    ids = [b.id for b in adapter.blocks(wrapped)]
    assert ids == [b.id for b in adapter.blocks(model)]
    latents, t, cond = inputs
    with torch.no_grad(), adapter.capture_features(wrapped, ids[:1]) as feats:
        adapter.predict(model, latents, t, cond)
    assert math.isfinite(feats[ids[0]].image.sum().item())
