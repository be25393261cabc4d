"""Training throughput of the tiny zoo's components at the default `pretrain` config (steps/s).

    python bench/zoo_throughput.py [--threads 2] [--steps 20]

Random inputs in the real shapes (32 px images, latents of the configured VAE, 16 text tokens); the step counts
in `PretrainConfig` divided by these rates give the pretrain stage's time budget. Reported
figures depend on the machine's load: run it on an idle machine.
"""

import argparse

import numpy as np
import torch

from ditcompress.models.base import Conditioning
from ditcompress.models.registry import get_adapter
from ditcompress.zoo.clip import build_clip, build_clip_processor, train_clip
from ditcompress.zoo.config import PretrainConfig
from ditcompress.zoo.pretrain import LATENT_CHANNELS
from ditcompress.zoo.pipelines import flux_scheduler, pixart_scheduler
from ditcompress.zoo.teacher import TeacherData, build_flux_transformer, build_pixart_transformer, train_teacher
from ditcompress.zoo.text import build_clip_tokenizer
from ditcompress.zoo.vae import build_vae, train_vae

IMAGE_SIZE = 32  # the shapes dataset's default
CAPTIONS = ["a photo of a red circle left of a blue square", "a photo of three yellow triangles"]


def teacher_rate(family: str, cfg: PretrainConfig, steps: int) -> float:
    """Teacher steps/s through the shared loop (adapter objective + predict)."""
    g = torch.Generator().manual_seed(0)
    n, tokens = 256, 16
    size = IMAGE_SIZE // 2 ** (len(cfg.vae.channels) - 1)  # latent side
    if family == "pixart":
        tcfg = cfg.pixart.model_copy(update={"steps": steps})
        model = build_pixart_transformer(tcfg, LATENT_CHANNELS["pixart"], size, cfg.text.width, seed=0)
        lat = torch.randn(n, LATENT_CHANNELS["pixart"], size, size, generator=g)
        bank = Conditioning(torch.randn(2, tokens, cfg.text.width, generator=g), torch.ones(2, tokens, dtype=torch.long))
        objective = get_adapter(family).objective(pixart_scheduler("v_prediction", tcfg.beta_schedule).config)
    else:
        tcfg = cfg.flux.model_copy(update={"steps": steps})
        model = build_flux_transformer(tcfg, LATENT_CHANNELS["flux"], cfg.text.width, cfg.clip.width, seed=0)
        lat = torch.randn(n, LATENT_CHANNELS["flux"], size, size, generator=g)  # packed 2x2: (size/2)^2 tokens
        bank = Conditioning(torch.randn(2, tokens, cfg.text.width, generator=g), pooled=torch.randn(2, cfg.clip.width))
        objective = get_adapter(family).objective(flux_scheduler().config, weighting=tcfg.sigma_weighting)
    data = TeacherData(lat, bank, torch.arange(n) % 2, bank.select(slice(0, 1)))
    _, stats = train_teacher(get_adapter(family), objective, model, data, tcfg, seed=0)
    return stats["steps_per_s"]


def main():
    """Print steps/s and the implied minutes at the configured step counts as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = PretrainConfig()
    images = np.random.default_rng(0).integers(0, 256, (256, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    rates = {}
    vae = build_vae(cfg.vae.model_copy(update={"steps": args.steps}), LATENT_CHANNELS["pixart"], IMAGE_SIZE, seed=0)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    rates["vae"] = (train_vae(vae, pixels, cfg.vae.model_copy(update={"steps": args.steps}), 0)["steps_per_s"],
                    cfg.vae.steps * 2)  # two VAEs
    tok = build_clip_tokenizer(CAPTIONS, cfg.clip.max_length)
    clip_cfg = cfg.clip.model_copy(update={"steps": args.steps})
    rates["clip"] = (train_clip(build_clip(cfg.clip, tok, IMAGE_SIZE, 0), build_clip_processor(tok, IMAGE_SIZE), images,
                                [CAPTIONS[i % 2] for i in range(256)], clip_cfg, 0)["steps_per_s"], cfg.clip.steps)
    for family in ("pixart", "flux"):
        rates[family] = (teacher_rate(family, cfg, args.steps), getattr(cfg, family).steps)
    print("| component | steps/s | configured steps | minutes |\n|---|---|---|---|")
    for name, (rate, steps) in rates.items():
        print(f"| {name} | {rate:.2f} | {steps} | {steps / rate / 60:.1f} |")
    total = sum(steps / rate for rate, steps in rates.values()) / 60
    print(f"| total (plus ~1 min encoding, saving, grids) | | | {total:.1f} |")


if __name__ == "__main__":
    main()
