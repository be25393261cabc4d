"""The shared teacher loop: CFG dropout rows, EMA and LR schedule values, determinism per seed."""

import pytest
import torch

from ditcompress.models.base import Conditioning
from ditcompress.models.registry import get_adapter
from ditcompress.zoo.common import ema_update, warmup_cosine
from ditcompress.zoo.pipelines import flux_scheduler, pixart_scheduler
from ditcompress.zoo.teacher import TeacherData, build_flux_transformer, build_pixart_transformer, train_teacher


def _data(family, cfg, n=16, captions=3, seed=0):
    """Random latents and a random caption bank shaped like the family's real conditioning."""
    g = torch.Generator().manual_seed(seed)
    channels = 4 if family == "pixart" else 16
    lat = torch.randn(n, channels, 8, 8, generator=g)
    embeds = torch.randn(captions, 5, cfg.text.width, generator=g)
    if family == "pixart":
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
        bank, empty = Conditioning(embeds, mask), Conditioning(torch.zeros(1, 5, cfg.text.width), mask[2:] * 0 + 1)
    else:
        bank = Conditioning(embeds, pooled=torch.randn(captions, cfg.clip.width, generator=g))
        empty = Conditioning(torch.zeros(1, 5, cfg.text.width), pooled=torch.zeros(1, cfg.clip.width))
    return TeacherData(lat, bank, torch.arange(n) % captions, empty)


def _train(family, cfg, seed):
    adapter = get_adapter(family)
    if family == "pixart":
        model = build_pixart_transformer(cfg.pixart, 4, 8, cfg.text.width, seed=0)
        objective, tcfg = adapter.objective(pixart_scheduler("v_prediction").config), cfg.pixart
    else:
        model = build_flux_transformer(cfg.flux, 16, cfg.text.width, cfg.clip.width, seed=0)
        objective, tcfg = adapter.objective(flux_scheduler().config, weighting="logit_normal"), cfg.flux
    ema, stats = train_teacher(adapter, objective, model, _data(family, cfg), tcfg, seed)
    return model, ema, stats


def test_batch_swaps_in_the_empty_prompt_where_dropped(tiny_cfg):
    data = _data("pixart", tiny_cfg)
    idx, drop = torch.tensor([0, 1, 2, 4]), torch.tensor([False, True, False, True])
    lat, cond = data.batch(idx, drop)
    torch.testing.assert_close(lat, data.latents[idx])
    for row, (i, d) in enumerate(zip(idx.tolist(), drop.tolist())):
        src = data.empty.select(0) if d else data.captions.select(data.caption_index[i].item())
        torch.testing.assert_close(cond.prompt_embeds[row], src.prompt_embeds)
        torch.testing.assert_close(cond.attention_mask[row], src.attention_mask)


def test_ema_and_schedule_values():
    model, ema = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(1.0)
    ema.weight.data.fill_(0.0)
    ema_update(ema, model, decay=0.99, step=0)  # warm start: decay min(0.99, 1/10) = 0.1
    assert ema.weight.item() == pytest.approx(0.9)
    ema_update(ema, model, decay=0.5, step=1000)
    assert ema.weight.item() == pytest.approx(0.95)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = warmup_cosine(opt, warmup=4, total=14, floor=0.1)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[9] == pytest.approx(0.55) and lrs[14] == pytest.approx(0.1)


@pytest.mark.parametrize("family", ["pixart", "flux"])
def test_training_is_deterministic_per_seed(family, tiny_cfg):
    model_a, ema_a, stats = _train(family, tiny_cfg, seed=0)
    model_b, ema_b, _ = _train(family, tiny_cfg, seed=0)
    _, ema_c, _ = _train(family, tiny_cfg, seed=1)
    fresh = build_pixart_transformer(tiny_cfg.pixart, 4, 8, tiny_cfg.text.width, seed=0) if family == "pixart" \
        else build_flux_transformer(tiny_cfg.flux, 16, tiny_cfg.text.width, tiny_cfg.clip.width, seed=0)
    sd_a, sd_b, sd_c, sd_0 = (m.state_dict() for m in (ema_a, ema_b, ema_c, fresh))
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert any(not torch.equal(sd_a[k], sd_c[k]) for k in sd_a)
    assert any(not torch.equal(sd_a[k], sd_0[k]) for k in sd_a)  # it did train
    assert not ema_a.training and stats["loss"] > 0
