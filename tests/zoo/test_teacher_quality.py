"""A teacher trained for a few hundred steps beats an untrained one on the shapes detector and on CMMD.

Shrunken world: 24 px images, a 2x VAE and a 2-block PixArt trained on the circle captions of
the colour task ("a photo of a red circle"). Both teachers draw the same prompts from the same
per-image seeds, so the two sample sets come in pairs. Measures: how often the detector finds an
object of the prompted colour, and CMMD to the training images through a tiny CLIP.

Training follows a different floating-point path on every CPU (vector width, BLAS kernels), so
the trained weights and every figure differ between machines: the untrained teacher's CMMD was
5.55 on one and 2.96 on another. The assertions are therefore significance tests, not one
machine's numbers: could the paired difference have come from chance, i.e. from which teacher of
a pair drew which image? Each must be rejected at the 1% level.
"""

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from ditcompress.data.config import GenerateConfig
from ditcompress.metrics.cmmd import cmmd
from ditcompress.models.registry import get_adapter
from ditcompress.sampling import Renderer, image_seeds
from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.shapes.dataset import build_dataset, load_split
from ditcompress.shapes.detector import ShapesDetector
from ditcompress.zoo.common import images_to_tensor
from ditcompress.zoo.pipelines import pixart_pipeline
from ditcompress.zoo.teacher import TeacherData, build_pixart_transformer, train_teacher
from ditcompress.zoo.text import build_t5_encoder, build_t5_tokenizer, caption_vocabulary
from ditcompress.zoo.vae import build_vae, encode_modes, normalise_latents, set_latent_scaling, train_vae

from .conftest import shrink

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
PROMPTS = [f"a photo of {'an' if c == 'orange' else 'a'} {c} circle" for c in COLORS] * 32  # 192 pairs
ALPHA = 0.01  # significance level: a teacher that training left no better passes a check with at most this chance
SAMPLER = GenerateConfig(height=24, width=24, num_inference_steps=10, guidance_scale=3.0, max_sequence_length=16,
                         torch_dtype="float32", batch_size=64)


def _samples(pipe) -> np.ndarray:
    return Renderer(pipe, "pixart", SAMPLER).render(PROMPTS, image_seeds(0, "quality", len(PROMPTS)))


def _colour_hits(images, detector) -> np.ndarray:
    """Per image: does the detector find an object of the prompted colour?"""
    colours = [p.split()[-2] for p in PROMPTS]
    return np.array([any(d.color == c for d in detector.detect(im)) for c, im in zip(colours, images)])


def _paired_permutation_p(x, y, statistic, rounds: int = 999, seed: int = 0) -> float:
    """One-sided p of `statistic(x, y)` when the rows x_i, y_i of each pair are exchangeable (random swaps)."""
    observed, rng, above = statistic(x, y), np.random.default_rng(seed), 0
    for _ in range(rounds):
        swap = rng.random(len(x)) < 0.5
        above += statistic(np.where(swap[:, None], y, x), np.where(swap[:, None], x, y)) >= observed
    return (1 + above) / (1 + rounds)


def _shapes_clip(train, tmp_path):
    """CLIP embeddings (CMMD preprocessing) through a tiny CLIP trained briefly on the same world."""
    from ditcompress.metrics.clip import HFClip
    from ditcompress.zoo.clip import build_clip, build_clip_processor, train_clip
    from ditcompress.zoo.config import ClipConfig
    from ditcompress.zoo.text import build_clip_tokenizer

    # 600 steps: a CLIP trained for 100 ranked the samples the wrong way round on the bar vocabulary
    cfg = ClipConfig(steps=600, batch_size=64, warmup_steps=30)
    tok = build_clip_tokenizer(train.captions + PROMPTS, cfg.max_length)
    clip, processor = build_clip(cfg, tok, 24, seed=0), build_clip_processor(tok, 24)
    train_clip(clip, processor, train.images, train.captions, cfg, seed=0)
    clip.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    model = HFClip(tmp_path / "clip", "cpu")
    return lambda images: model.embed_images(list(images), "cmmd")


@pytest.mark.slow
def test_trained_teacher_beats_untrained_on_detector(tmp_path):
    torch.set_num_threads(2)
    build_dataset(ShapesDataConfig(image_size=24, n_train=6000, n_reference=4, prompts_per_task=1, dpg_prompts=1),
                  0, tmp_path, progress=False)
    train = load_split(tmp_path / "train")
    cfg = shrink(vae={"channels": (16, 16), "norm_groups": 8, "steps": 300, "batch_size": 16},
                 pixart={"layers": 2, "heads": 4, "head_dim": 16, "steps": 400, "batch_size": 32, "lr": 3e-3,
                         "warmup_steps": 20})
    vae = build_vae(cfg.vae, 4, 24, seed=0)
    train_vae(vae, images_to_tensor(train.images), cfg.vae, seed=0)
    keep = [i for i, item in enumerate(train.items) if item["tag"] == "colors" and item["include"][0]["class"] == "circle"]
    captions = [train.captions[i] for i in keep]
    modes = encode_modes(vae, images_to_tensor(train.images[keep]))
    set_latent_scaling(vae, modes, shift=False)

    tok = build_t5_tokenizer(caption_vocabulary(captions + PROMPTS), 16)
    model = build_pixart_transformer(cfg.pixart, 4, 12, cfg.text.width, seed=0)
    pipe = pixart_pipeline(model, vae, build_t5_encoder(cfg.text, len(tok), 0), tok, cfg.pixart.prediction_type,
                           cfg.pixart.beta_schedule)
    detector = ShapesDetector()
    before = _samples(pipe)
    untrained = _colour_hits(before, detector)

    adapter = get_adapter("pixart")
    unique = sorted(set(captions))
    with torch.no_grad():
        bank, empty = adapter.encode_prompts(pipe, unique, 16), adapter.encode_prompts(pipe, [""], 16)
    data = TeacherData(normalise_latents(vae, modes), bank, torch.tensor([unique.index(c) for c in captions]), empty)
    pipe.transformer, _ = train_teacher(adapter, adapter.objective(pipe.scheduler.config), model, data, cfg.pixart,
                                        seed=0)
    after = _samples(pipe)
    trained = _colour_hits(after, detector)

    # McNemar's exact test: of the pairs where one teacher hits and the other misses, the trained
    # teacher's share would be Binomial(n, 1/2) if training changed nothing
    only_trained, only_untrained = int((trained & ~untrained).sum()), int((untrained & ~trained).sum())
    discordant = only_trained + only_untrained
    p_hits = binomtest(only_trained, discordant, 0.5, alternative="greater").pvalue if discordant else 1.0
    print(f"colour hits: trained {trained.mean():.3f}, untrained {untrained.mean():.3f}, "
          f"discordant pairs {only_trained} vs {only_untrained}, p {p_hits:.2g}")
    assert only_trained > only_untrained and p_hits < ALPHA, (trained.mean(), untrained.mean(), p_hits)

    # CMMD to the training images: the trained teacher's samples are closer than the untrained
    # one's by more than swapping the images of random pairs between the two sets gives
    embed = _shapes_clip(train, tmp_path)
    reference, noise, fit = embed(train.images[keep][:96]), embed(before), embed(after)
    gap = lambda far, near: cmmd(far, reference) - cmmd(near, reference)  # noqa: E731
    p_cmmd = _paired_permutation_p(noise, fit, gap)
    near, far = cmmd(fit, reference), cmmd(noise, reference)
    print(f"CMMD to the training images: trained {near:.3f}, untrained {far:.3f}, permutation p {p_cmmd:.2g}")
    assert near < far and p_cmmd < ALPHA, (near, far, p_cmmd)
