"""Pipelines assembled from zoo parts: the stock diffusers loaders reload them to the last bit, offline."""

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, PixArtSigmaPipeline

from ditcompress.data.config import GenerateConfig
from ditcompress.sampling import Renderer
from ditcompress.zoo.clip import build_clip, clip_text_encoder
from ditcompress.zoo.pipelines import flux_pipeline, pixart_pipeline, save_pipeline
from ditcompress.zoo.teacher import build_flux_transformer, build_pixart_transformer
from ditcompress.zoo.text import build_clip_tokenizer, build_t5_encoder, build_t5_tokenizer, caption_vocabulary
from ditcompress.zoo.vae import build_vae

PROMPTS = ["a photo of a red circle left of a blue square", "a photo of three yellow triangles"]
SIZE = 24


def _transformer(family, cfg, seed):
    if family == "pixart":
        return build_pixart_transformer(cfg.pixart, 4, SIZE // 2 ** (len(cfg.vae.channels) - 1), cfg.text.width, seed)
    return build_flux_transformer(cfg.flux, 16, cfg.text.width, cfg.clip.width, seed)


def _pipeline(family, cfg, seed=0):
    t5_tok = build_t5_tokenizer(caption_vocabulary(PROMPTS), cfg.text.max_length)
    t5 = build_t5_encoder(cfg.text, len(t5_tok), seed)
    if family == "pixart":
        vae = build_vae(cfg.vae, 4, SIZE, seed)
        return pixart_pipeline(_transformer(family, cfg, seed), vae, t5, t5_tok, cfg.pixart.prediction_type,
                               cfg.pixart.beta_schedule)
    vae = build_vae(cfg.vae, 16, SIZE, seed)
    vae.register_to_config(shift_factor=0.1, scaling_factor=0.7)
    clip_tok = build_clip_tokenizer(PROMPTS, cfg.clip.max_length)
    text = clip_text_encoder(build_clip(cfg.clip, clip_tok, SIZE, seed))
    return flux_pipeline(_transformer(family, cfg, seed), vae, text, clip_tok, t5, t5_tok)


def _sample(pipe, family):
    settings = GenerateConfig(height=SIZE, width=SIZE, num_inference_steps=3, guidance_scale=3.5,
                              max_sequence_length=16, torch_dtype="float32")
    return Renderer(pipe, family, settings).render(PROMPTS, [0, 1])


@pytest.mark.parametrize("family,cls", [("pixart", PixArtSigmaPipeline), ("flux", FluxPipeline)])
def test_saved_pipeline_reloads_exactly(family, cls, tiny_cfg, tmp_path):
    pipe = _pipeline(family, tiny_cfg)
    with torch.no_grad():  # random weights give flat images; make the transformer's output matter
        for p in pipe.transformer.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ref = _sample(pipe, family)
    save_pipeline(pipe, tmp_path)
    expected = {"model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"}
    if family == "flux":
        expected |= {"text_encoder_2", "tokenizer_2"}
    assert expected <= {p.name for p in tmp_path.iterdir()}
    loaded = cls.from_pretrained(tmp_path)
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert type(loaded.scheduler) is type(pipe.scheduler)
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    np.testing.assert_array_equal(_sample(loaded, family), ref)
    loaded.transformer = _transformer(family, tiny_cfg, seed=5)
    assert not np.array_equal(_sample(loaded, family), ref)


def test_pixart_scheduler_matches_objective(tiny_cfg):
    from ditcompress.models.registry import get_adapter

    pipe = _pipeline("pixart", tiny_cfg)
    objective = get_adapter("pixart").objective(pipe.scheduler.config)
    assert objective.prediction_type == tiny_cfg.pixart.prediction_type == "v_prediction"
    torch.testing.assert_close(objective.scheduler.alphas_cumprod, pipe.scheduler.alphas_cumprod)
