"""Train one shapes-world teacher with `pretrain:` overrides on the saved zoo, and score it on GenEval.

    python bench/teacher_variant.py --family pixart --set '{pixart: {steps: 4000}}' [--seeds 4] [--out DIR]
    python bench/teacher_variant.py --family pixart --score models/shapes/pixart   # score only, no training

How the README's teacher variants were measured. The variant trains on the saved zoo's VAE
latents and text encoders (models/shapes/<family>), exactly as the pretrain stage trains its
teacher (`zoo.pretrain.train_family_teacher`), with the `--set` overrides applied to the defaults of
`zoo/config.py`. A `text:` override rebuilds the frozen T5 (same seed stream) before encoding.
It then scores it with `metrics.benchmark.model_geneval`: the 96 GenEval eval prompts, `--seeds`
images each (4, as the evaluate stage, whose images and figure these are), with the family's preset
sampler, and prints the per-task and overall accuracy (the shapes detector).

`--threads 1` (the default) is what the pretrain stage gives each of its two workers, so a
variant with no overrides reproduces the default teacher's training run. A 4000-step PixArt
teacher takes about 12 minutes on one core; `--out DIR` also saves its pipeline and a sample grid.
A `latent_whitening` override (e.g. `{flux: {latent_whitening: 0.25}}`) folds the whitening
into the loaded VAE before the latents are encoded, as the pretrain stage would. A `vae:` override
(e.g. `{vae: {scale_equivariance: 1.0}}`, or `{vae: {channels: [16, 32, 64, 128], steps: 4800}}`
for an 8x VAE) first retrains the family's VAE as the pretrain stage would (same seed stream) and
rebuilds the pipeline around it; the result then also carries the VAE's figures (L1, recon
L1 on the 0-255 scale, GenEval of its round trip, the latent's high-frequency share, and its active
channels: those with over 1% of the latent's variance).
`--device cuda` trains and samples on a GPU: the data and text are still prepared on the CPU, and
the batches, times and noise come from the same seeded CPU generator, so only the arithmetic
differs from a CPU run. The tiny Flux teacher is launch-bound there (about 28 steps/s on an H200,
9x one core of the CPU that trained the zoo); eight variants side by side still run at about
20-28 steps/s each (docs/shapes_world_experiments.md, "Flux variants on a GPU").
`--score DIR` skips training and scores a saved pipeline the same way (the README's 4-seed figures
of the default teachers: `--score models/shapes/pixart`, `--score models/shapes/flux`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ditcompress.metrics import get_evaluator
from ditcompress.metrics.benchmark import model_geneval
from ditcompress.metrics.geneval import GENEVAL_TASKS
from ditcompress.models.registry import get_adapter
from ditcompress.sampling import Renderer, image_seeds, preset_settings
from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.shapes.dataset import load_split, read_geneval_metadata
from ditcompress.shapes.detector import ShapesDetector
from ditcompress.utils.grid import sample_grid
from ditcompress.zoo import pretrain
from ditcompress.zoo.common import images_to_tensor
from ditcompress.zoo.config import PretrainConfig
from ditcompress.zoo.pipelines import save_pipeline
from ditcompress.zoo.text import build_t5_encoder
from ditcompress.zoo.vae import encode_modes, high_frequency_share

from shapes_world_figures import vae_round_trip  # bench/, next to this script


def train_variant(family: str, cfg: PretrainConfig, zoo: Path, data: Path, seed: int, shapes: list[str],
                  device: str = "cpu"):
    """The family's saved pipeline with a freshly trained teacher (EMA weights); returns (pipeline, stats)."""
    pipe = get_adapter(family).load_pipeline(str(zoo / family))
    if cfg.text != PretrainConfig().text:
        t5 = pipe.text_encoder if family == "pixart" else pipe.text_encoder_2
        t5 = build_t5_encoder(cfg.text, t5.config.vocab_size, pretrain.stream_seed(seed, "t5"))
        setattr(pipe, "text_encoder" if family == "pixart" else "text_encoder_2", t5)
    train = load_split(data / "train")
    stats = {}
    if cfg.vae != PretrainConfig().vae:
        pipe, latents, stats["vae"] = retrained_vae(family, cfg, pipe, train.images, data, seed, shapes)
    else:
        # the saved VAE's scaling recomputed from the same images (unchanged) after any whitening override
        latents = pretrain.family_latents(family, cfg, pipe.vae, images_to_tensor(train.images))
    bank = pretrain.teacher_data(family, cfg, pipe, latents, train.captions)
    pipe.transformer, teacher_stats = pretrain.train_family_teacher(family, cfg, bank, dict(pipe.scheduler.config), seed,
                                                                     device=device)
    return pipe, stats | teacher_stats


def retrained_vae(family: str, cfg: PretrainConfig, pipe, images: np.ndarray, data: Path, seed: int,
                  shapes: list[str]):
    """`pipe` rebuilt around a VAE trained with `cfg.vae` by the pretrain stage's own VAE job; the
    teacher-space latents of `images`; the VAE's figures."""
    truth = load_split(data / "eval" / "geneval_truth")
    pixels = images_to_tensor(images)
    weights, stats = pretrain._vae_job(cfg, family, images, seed)
    vae, latents, stats = pretrain._finish_vae(cfg, family, weights, stats, pixels, images_to_tensor(truth.images), seed)
    modes = encode_modes(vae, pixels[:1000])
    stats["high_frequency_share"] = high_frequency_share(modes)
    variance = modes.var(dim=(0, 2, 3))  # channels holding > 1% of it: a KL weight of 1e-1 leaves 2 of 16
    stats["active_channels"] = int((variance > 0.01 * variance.sum()).sum())
    with torch.no_grad():
        stats["round_trip_geneval"] = geneval_evaluator(data, shapes).run(vae_round_trip(vae, truth.images))["geneval/overall"]
    # a new pipeline, so vae_scale_factor follows the VAE (an 8x VAE makes it 8)
    return type(pipe)(**{**pipe.components, "vae": vae}), latents, stats


def geneval_evaluator(data: Path, shapes: list[str], images_per_prompt: int = 1):
    """The GenEval evaluator of the eval prompts with the shapes detector."""
    return get_evaluator("geneval", metadata=str(data / "eval/geneval_metadata.jsonl"),
                         images_per_prompt=images_per_prompt, detector=ShapesDetector(shapes), device="cpu")


def score(pipe, family: str, data: Path, shapes: list[str], seeds: int, seed: int):
    """GenEval accuracy per task and overall at `seeds` images per prompt (`metrics.benchmark.model_geneval`,
    the evaluate stage's images); and the renderer, for a sample grid."""
    renderer = Renderer(pipe, family, preset_settings(f"shapes-{family}", batch_size=64))
    r = model_geneval(renderer, geneval_evaluator(data, shapes, seeds), seed, desc="geneval")
    return {t: round(r[f"geneval/{t}"], 3) for t in GENEVAL_TASKS} | {"overall": round(r["geneval/overall"], 3)}, renderer


def first_images(renderer, data: Path, seeds: int, seed: int):
    """Each eval prompt's first GenEval image (as `score` rendered it) and the prompts."""
    prompts = [item["prompt"] for item in read_geneval_metadata(data / "eval/geneval_metadata.jsonl")]
    first = [image_seeds(seed, "geneval", 1, start=k * seeds)[0] for k in range(len(prompts))]
    return renderer.render(prompts, first), prompts


def merged(base: dict, override: dict) -> dict:
    """`base` with `override` applied key by key, recursing into mappings."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["pixart", "flux"], default="pixart")
    ap.add_argument("--set", default="{}", help="YAML mapping of `pretrain:` overrides, e.g. '{pixart: {steps: 4000}}'")
    ap.add_argument("--zoo", type=Path, default=Path("models/shapes"))
    ap.add_argument("--data", type=Path, default=Path("data/shapes"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="for data.shapes and seed")
    ap.add_argument("--seeds", type=int, default=4, help="images per GenEval prompt (the evaluate stage uses 4)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="train and sample here, e.g. cuda (the data is still prepared on the CPU)")
    ap.add_argument("--out", type=Path, help="save the pipeline, a sample grid and result.json here")
    ap.add_argument("--score", type=Path, help="score this saved pipeline instead of training a variant")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    params = yaml.safe_load(args.params.read_text())
    overrides = yaml.safe_load(args.set) or {}
    cfg = PretrainConfig(**merged(params.get("pretrain") or {}, overrides))
    shapes = list(ShapesDataConfig(**params["data"]).shapes)
    start = time.perf_counter()
    if args.score:
        pipe, stats = get_adapter(args.family).load_pipeline(str(args.score)), {"seconds": 0.0}
    else:
        pipe, stats = train_variant(args.family, cfg, args.zoo, args.data, int(params.get("seed", 0)), shapes,
                                    args.device)
    pipe.to(args.device)
    seed = int((params.get("generate") or {}).get("seed", 0))
    res, renderer = score(pipe, args.family, args.data, shapes, args.seeds, seed)
    res |= {"family": args.family, "pipeline": str(args.score) if args.score else None, "overrides": overrides,
            "device": args.device, "train_seconds": round(stats["seconds"], 1), "vae": stats.get("vae"), "minutes": round((time.perf_counter() - start) / 60, 1)}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        if not args.score:
            save_pipeline(pipe.to("cpu"), args.out / "pipeline")
        sample_grid(*first_images(renderer, args.data, args.seeds, seed), ncol=16).save(args.out / "grid.png")
        (args.out / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
