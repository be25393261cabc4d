"""The pretrain stage end to end on the shrunken config: layout, stock loaders, determinism."""

import json

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, PixArtSigmaPipeline
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPProcessor

from ditcompress.models.registry import get_adapter
from ditcompress.shapes.dataset import load_split, read_geneval_metadata
from ditcompress.shapes.truth import scene_satisfies
from ditcompress.zoo.clip import caption_ranking_accuracy
from ditcompress.zoo.pretrain import _grid, run_pretrain

from .conftest import Recorder, shrink


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, shapes_dir):
    """(out_dir, metrics, tracker) of one shrunken pretrain run."""
    torch.set_num_threads(1)
    out, tracker = tmp_path_factory.mktemp("zoo") / "models", Recorder()
    return out, run_pretrain(shrink(), shapes_dir, out, seed=0, tracker=tracker), tracker


def test_layout_and_figures(zoo):
    out, metrics, tracker = zoo
    assert json.loads((out / "pixart" / "model_index.json").read_text())["_class_name"] == "PixArtSigmaPipeline"
    index = json.loads((out / "flux" / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline" and index["tokenizer_2"] == ["transformers", "T5Tokenizer"]
    assert {"pixart", "flux", "vae_pixart", "vae_flux", "clip"} <= set(metrics)
    assert set(tracker.images) == {"samples_pixart.png", "samples_flux.png"}
    assert (out / "samples" / "pixart.png").is_file() and (out / "samples" / "flux.png").is_file()
    assert any("pixart/loss" in m for _, m in tracker.metrics)


@pytest.mark.parametrize("family,cls", [("pixart", PixArtSigmaPipeline), ("flux", FluxPipeline)])
def test_stock_loaders_and_adapter_load_the_teachers(zoo, shapes_dir, family, cls):
    out, _, _ = zoo
    pipe = cls.from_pretrained(out / family)
    adapter = get_adapter(family)
    strict = adapter.load_transformer(out / family)  # raises on any missing or unexpected weight
    sd = pipe.transformer.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in strict.state_dict().items())
    # the reloaded pipeline (tokenizers, encoders, transformer, VAE, scheduler) draws the stage's sample
    # grid again, pixel for pixel; the same transformer with halved weights does not
    saved = np.asarray(Image.open(out / "samples" / f"{family}.png"))
    items = read_geneval_metadata(shapes_dir / "eval" / "geneval_metadata.jsonl")
    size = load_split(shapes_dir / "train").images.shape[1]
    np.testing.assert_array_equal(np.asarray(_grid(family, pipe, items, 1, size, seed=0)), saved)
    pipe.transformer = adapter.load_transformer(out / family)
    with torch.no_grad():
        for param in pipe.transformer.parameters():
            param.mul_(0.5)
    assert not np.array_equal(np.asarray(_grid(family, pipe, items, 1, size, seed=0)), saved)
    vae = pipe.vae.config
    assert vae.latent_channels == (4 if family == "pixart" else 16) and (vae.shift_factor is None) == (family == "pixart")


def test_clip_directory_loads_and_reproduces_its_ranking_accuracy(zoo, shapes_dir):
    out, metrics, _ = zoo
    model, processor = CLIPModel.from_pretrained(out / "clip"), CLIPProcessor.from_pretrained(out / "clip")
    assert model.config.vision_config.image_size == processor.image_processor.crop_size["height"] == 24
    # the stage's figure: how often a GenEval truth image's own caption beats a caption it does not satisfy
    truth = load_split(shapes_dir / "eval" / "geneval_truth")
    mismatched = np.array([[not scene_satisfies(scene, item) for item in truth.items] for scene in truth.scenes])
    accuracy = caption_ranking_accuracy(model, processor, truth.images, truth.captions, mismatched)
    assert metrics["clip"]["ranking_accuracy"] == accuracy and mismatched.any()


def test_same_seed_same_zoo_whatever_the_schedule(zoo, tmp_path, shapes_dir):
    """One worker with one thread (the fixture) and two worker processes with one thread each agree."""
    out, _, _ = zoo
    again, tracker = tmp_path / "models", Recorder()
    run_pretrain(shrink(threads=2, workers=2), shapes_dir, again, seed=0, tracker=tracker)
    for part in ("pixart/transformer", "flux/transformer", "pixart/vae", "flux/vae", "flux/text_encoder"):
        (a,), (b,) = (sorted((d / part).glob("*.safetensors")) for d in (out, again))
        wa, wb = load_file(a), load_file(b)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), part
    # the workers' step metrics reached this process's tracker
    logged = {k for _, m in tracker.metrics for k in m}
    assert {"vae_pixart/l1", "vae_flux/l1", "clip/loss", "pixart/loss", "flux/loss"} <= logged
