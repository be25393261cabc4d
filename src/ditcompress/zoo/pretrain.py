"""Pretrain stage: build and train the tiny model zoo of the shapes world, save it in the hub layout.

    dvc repro pretrain        # ~61 min on a 2-core CPU with the default step counts

Components: tokenizers and the frozen T5 (seconds, in this process), the PixArt VAE (4 channels)
and the Flux VAE (16), CLIP (its text tower becomes Flux's CLIP text encoder), the PixArt teacher
(needs its VAE), the Flux teacher (needs its VAE and CLIP). `pretrain.workers` of them train at a
time in separate processes (zoo/jobs.py): with two, the VAEs side by side, then the PixArt teacher
next to CLIP and then the Flux teacher. Every component has its own random stream, so the zoo does
not depend on the schedule. Written under `out_dir`:

    pixart/    PixArtSigmaPipeline (transformer, vae, text_encoder, tokenizer, scheduler)
    flux/      FluxPipeline (+ text_encoder_2, tokenizer_2)
    clip/      CLIPModel + CLIPProcessor (CLIP score, CMMD)
    samples/   pixart.png, flux.png: each teacher on GenEval prompts of every task
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ditcompress.metrics.base import resolve_device
from ditcompress.models.registry import get_adapter
from ditcompress.sampling import Renderer, image_seeds, preset_settings
from ditcompress.shapes.dataset import load_split, read_geneval_metadata
from ditcompress.shapes.prompts import GENEVAL_TAGS
from ditcompress.shapes.truth import scene_satisfies
from ditcompress.utils.grid import sample_grid
from ditcompress.utils.logging import StepBars, get_logger
from ditcompress.zoo import clip as clip_lib
from ditcompress.zoo.common import images_to_tensor, tensor_to_images
from ditcompress.zoo.config import PretrainConfig
from ditcompress.zoo.jobs import JobPool, load_weights, weights_to_bytes
from ditcompress.zoo.pipelines import flux_pipeline, pixart_pipeline, save_pipeline
from ditcompress.zoo.teacher import TeacherData, build_flux_transformer, build_pixart_transformer, train_teacher
from ditcompress.zoo.text import build_clip_tokenizer, build_t5_encoder, build_t5_tokenizer, caption_vocabulary
from ditcompress.zoo.vae import build_vae, encode_modes, teacher_latents, train_vae

log = get_logger(__name__)

# one independent random stream per component: retuning one leaves the others' initialisation alone
STREAMS = {"t5": 0, "vae_pixart": 1, "vae_flux": 2, "clip": 3, "pixart": 4, "flux": 5, "samples": 6}
LATENT_CHANNELS = {"pixart": 4, "flux": 16}  # as PixArt-Σ's SDXL VAE and FLUX.1's VAE


def stream_seed(seed: int, name: str) -> int:
    """Seed of one component's random stream."""
    return seed * 100 + STREAMS[name]


def _vae_job(cfg: PretrainConfig, family: str, images: np.ndarray, seed: int, *, tracker=None):
    """Job: build and train one VAE; returns (weights, figures)."""
    name = f"vae_{family}"
    pixels = images_to_tensor(images)
    vae = build_vae(cfg.vae, LATENT_CHANNELS[family], pixels.shape[-1], stream_seed(seed, name))
    stats = train_vae(vae, pixels, cfg.vae, stream_seed(seed, name), tracker, name, device=resolve_device(cfg.device))
    return weights_to_bytes(vae), stats


def family_latents(family: str, cfg: PretrainConfig, vae, pixels: torch.Tensor) -> torch.Tensor:
    """Set up `vae`'s latent space for the family's teacher (whitening, scaling) and encode `pixels`."""
    # the Flux pipeline adds shift_factor back
    return teacher_latents(vae, pixels, shift=family == "flux", whitening=getattr(cfg, family).latent_whitening)


def _finish_vae(cfg: PretrainConfig, family: str, weights: bytes, stats: dict, pixels: torch.Tensor,
                truth: torch.Tensor, seed: int):
    """The trained VAE with its latent scaling set; the teacher-space latents of `pixels`; its figures."""
    vae = load_weights(build_vae(cfg.vae, LATENT_CHANNELS[family], pixels.shape[-1],
                                 stream_seed(seed, f"vae_{family}")), weights)
    latents = family_latents(family, cfg, vae, pixels)
    with torch.no_grad():
        rec = vae.decode(encode_modes(vae, truth)).sample
    stats["recon_l1_uint8"] = float(np.abs(tensor_to_images(rec).astype(float) - tensor_to_images(truth)).mean())
    stats["scaling_factor"] = vae.config.scaling_factor
    return vae, latents, stats


def _clip_job(cfg: PretrainConfig, tokenizer, images: np.ndarray, captions: list[str], seed: int, *, tracker=None):
    """Job: build and train CLIP; returns (weights, figures)."""
    model = clip_lib.build_clip(cfg.clip, tokenizer, images.shape[1], stream_seed(seed, "clip"))
    processor = clip_lib.build_clip_processor(tokenizer, images.shape[1])
    stats = clip_lib.train_clip(model, processor, images, captions, cfg.clip, stream_seed(seed, "clip"), tracker,
                                device=resolve_device(cfg.device))
    return weights_to_bytes(model), stats


def _finish_clip(cfg: PretrainConfig, tokenizer, weights: bytes, stats: dict, truth, seed: int):
    """The trained CLIP and its processor; figures include how often an image's caption beats a wrong one."""
    size = truth.images.shape[1]
    model = load_weights(clip_lib.build_clip(cfg.clip, tokenizer, size, stream_seed(seed, "clip")), weights)
    processor = clip_lib.build_clip_processor(tokenizer, size)
    mismatched = np.array([[not scene_satisfies(scene, item) for item in truth.items] for scene in truth.scenes])
    stats["ranking_accuracy"] = clip_lib.caption_ranking_accuracy(model, processor, truth.images, truth.captions,
                                                                  mismatched)
    return model, processor, stats


def _build_transformer(family: str, cfg: PretrainConfig, latent_size: int, seed: int):
    """A family's untrained teacher transformer (seeded: the same weights in every process)."""
    if family == "pixart":
        return build_pixart_transformer(cfg.pixart, LATENT_CHANNELS["pixart"], latent_size, cfg.text.width,
                                        stream_seed(seed, "pixart"))
    return build_flux_transformer(cfg.flux, LATENT_CHANNELS["flux"], cfg.text.width, cfg.clip.width,
                                  stream_seed(seed, "flux"))


def teacher_data(family: str, cfg: PretrainConfig, pipeline, latents, captions: list[str]) -> TeacherData:
    """Latents and the text-conditioning bank of every distinct caption, encoded by the pipeline's encoders."""
    adapter = get_adapter(family)
    unique = sorted(set(captions))
    row = {c: i for i, c in enumerate(unique)}
    with torch.no_grad():
        bank = adapter.encode_prompts(pipeline, unique, cfg.text.max_length)
        empty = adapter.encode_prompts(pipeline, [""], cfg.text.max_length)
    return TeacherData(latents, bank, torch.tensor([row[c] for c in captions]), empty)


def train_family_teacher(family: str, cfg: PretrainConfig, data: TeacherData, scheduler_config: dict, seed: int, *,
                         tracker=None, device: str = "cpu"):
    """Train a family's teacher from scratch through its adapter on `device`; returns (EMA transformer on
    the CPU, figures)."""
    adapter = get_adapter(family)
    tcfg = cfg.pixart if family == "pixart" else cfg.flux
    transformer = _build_transformer(family, cfg, data.latents.shape[-1], seed)
    weighting = cfg.pixart.timestep_sampling if family == "pixart" else cfg.flux.sigma_weighting
    objective = adapter.objective(scheduler_config, weighting=weighting)
    # Flux's guidance embedding sees the adapter's default scale (3.5) throughout: the teacher is
    # not guidance-distilled, so guidance_scale is inert; CFG dropout makes true CFG work (the
    # shapes-flux preset samples with true_cfg_scale 3.5)
    ema, stats = train_teacher(adapter, objective, transformer, data, tcfg, stream_seed(seed, family),
                               tracker=tracker, name=family, device=device)
    stats["params"] = sum(p.numel() for p in ema.parameters())
    return ema, stats


def _teacher_job(family: str, cfg: PretrainConfig, data: TeacherData, scheduler_config: dict, seed: int, *,
                 tracker=None):
    """Job: `train_family_teacher` on the configured device, with the weights as bytes for the parent process."""
    ema, stats = train_family_teacher(family, cfg, data, scheduler_config, seed, tracker=tracker,
                                      device=resolve_device(cfg.device))
    return weights_to_bytes(ema), stats


def _start_teacher(pool: JobPool, family: str, cfg: PretrainConfig, pipeline, latents, captions: list[str], seed: int):
    """Submit a family's teacher job, with the conditioning encoded here by the pipeline's text encoders."""
    data = teacher_data(family, cfg, pipeline, latents, captions)
    return pool.submit(_teacher_job, family, cfg, data, dict(pipeline.scheduler.config), seed)


def _grid(family: str, pipeline, items: list[dict], per_task: int, image_size: int, seed: int):
    """Teacher samples for the first `per_task` GenEval prompts of each tag, with the preset's sampler."""
    settings = preset_settings(f"shapes-{family}", height=image_size, width=image_size, batch_size=64)
    picked = [it for tag in GENEVAL_TAGS for it in [i for i in items if i["tag"] == tag][:per_task]]
    prompts = [it["prompt"] for it in picked]
    images = Renderer(pipeline, family, settings).render(prompts, image_seeds(stream_seed(seed, "samples"), "samples",
                                                                              len(prompts)))
    return sample_grid(images, prompts, ncol=per_task)


def run_pretrain(cfg: PretrainConfig, data_dir: Path, out_dir: Path, seed: int, tracker=None) -> dict:
    """Build, train and save the zoo under `out_dir`; returns the figures of every component."""
    start = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    train = load_split(data_dir / "train")
    truth = load_split(data_dir / "eval" / "geneval_truth")
    items = read_geneval_metadata(data_dir / "eval" / "geneval_metadata.jsonl")
    dpg_dir = data_dir / "eval" / "dpg_truth"  # DPG-style prompts must tokenize word by word too
    dpg = load_split(dpg_dir).captions if (dpg_dir / "metadata.jsonl").is_file() else []
    all_captions = train.captions + truth.captions + dpg + [it["prompt"] for it in items]
    size = train.images.shape[1]

    t5_tokenizer = build_t5_tokenizer(caption_vocabulary(all_captions), cfg.text.max_length)
    t5 = build_t5_encoder(cfg.text, len(t5_tokenizer), stream_seed(seed, "t5"))
    clip_tokenizer = build_clip_tokenizer(all_captions, cfg.clip.max_length)
    pixels, truth_pixels = images_to_tensor(train.images), images_to_tensor(truth.images)

    metrics: dict = {}
    pipelines, teachers = {}, {}
    bars = StepBars({"vae_pixart": cfg.vae.steps, "vae_flux": cfg.vae.steps, "clip": cfg.clip.steps,
                     "pixart": cfg.pixart.steps, "flux": cfg.flux.steps}, tracker)
    log.info("pretrain: training the zoo on %s, %d components at a time", resolve_device(cfg.device), cfg.workers)
    # the order matters only for the wall time: each teacher starts as soon as what it needs is done
    with JobPool(cfg.workers, cfg.threads, bars) as pool:
        vae_jobs = {f: pool.submit(_vae_job, cfg, f, train.images, seed) for f in ("pixart", "flux")}
        vae_px, latents_px, metrics["vae_pixart"] = _finish_vae(cfg, "pixart", *pool.result(vae_jobs["pixart"]),
                                                                pixels, truth_pixels, seed)
        pipelines["pixart"] = pixart_pipeline(
            _build_transformer("pixart", cfg, latents_px.shape[-1], seed), vae_px, t5, t5_tokenizer,
            cfg.pixart.prediction_type, cfg.pixart.beta_schedule)
        teachers["pixart"] = _start_teacher(pool, "pixart", cfg, pipelines["pixart"], latents_px, train.captions, seed)
        del latents_px
        vae_fx, latents_fx, metrics["vae_flux"] = _finish_vae(cfg, "flux", *pool.result(vae_jobs["flux"]),
                                                              pixels, truth_pixels, seed)
        del pixels
        clip_job = pool.submit(_clip_job, cfg, clip_tokenizer, train.images, train.captions, seed)
        clip, processor, metrics["clip"] = _finish_clip(cfg, clip_tokenizer, *pool.result(clip_job), truth, seed)
        clip.save_pretrained(out_dir / "clip")
        processor.save_pretrained(out_dir / "clip")
        pipelines["flux"] = flux_pipeline(
            _build_transformer("flux", cfg, latents_fx.shape[-1], seed), vae_fx, clip_lib.clip_text_encoder(clip),
            clip_tokenizer, t5, t5_tokenizer)
        teachers["flux"] = _start_teacher(pool, "flux", cfg, pipelines["flux"], latents_fx, train.captions, seed)
        del latents_fx
        for family, job in teachers.items():
            pipe = pipelines[family]
            weights, metrics[family] = pool.result(job)
            pipe.transformer = load_weights(pipe.transformer, weights).requires_grad_(False)
            save_pipeline(pipe, out_dir / family)
            grid = _grid(family, pipe, items, cfg.grid_prompts_per_task, size, seed)
            (out_dir / "samples").mkdir(parents=True, exist_ok=True)
            grid.save(out_dir / "samples" / f"{family}.png")
            if tracker is not None:
                tracker.log_image(grid, f"samples_{family}.png")
    bars.close()
    metrics["seconds_total"] = time.perf_counter() - start
    log.info("pretrain: zoo written to %s in %.1f min", out_dir, metrics["seconds_total"] / 60)
    return metrics
