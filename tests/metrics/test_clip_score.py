"""CLIP score equals torchmetrics' CLIPScore on the same tiny CLIP."""

import numpy as np
import pytest
import torch

from ditcompress.metrics import MetricsError, clip_score, get_evaluator

PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a circle", "x",
           "an orange square", "three circles", "a purple triangle", "a yellow circle above a square"]


class _Features(torch.nn.Module):
    """transformers 5 returns output objects from get_*_features; torchmetrics 1.9 expects tensors."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        """Projected image features as a tensor."""
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        """Projected text features as a tensor."""
        return self.model.get_text_features(*args, **kwargs).pooler_output


def torchmetrics_scores(path, images, prompts):
    """Per-pair scores and the clamped mean, computed by torchmetrics itself."""
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    model, processor = _Features(CLIPModel.from_pretrained(path).eval()), CLIPProcessor.from_pretrained(path)
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2)
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    metric.update(tensors, prompts)
    per_pair, _ = _clip_score_update(tensors, prompts, model, processor)
    return per_pair.detach().numpy(), float(metric.compute())


def test_clip_score_equals_torchmetrics(tiny_clip_dir, images):
    from ditcompress.metrics.clip import HFClip

    clip = HFClip(tiny_clip_dir, "cpu")
    img, txt = clip.embed_images(images, "processor"), clip.embed_texts(PROMPTS)
    per_pair, expected = torchmetrics_scores(tiny_clip_dir, images, PROMPTS)
    assert np.allclose(100 * (img * txt).sum(1), per_pair, atol=1e-4)
    assert expected > 0  # not clamped: the value itself is compared
    assert clip_score(img, txt) == pytest.approx(expected, abs=1e-4)


def test_clip_score_clamps_the_mean_not_each_pair():
    img = np.array([[1.0, 0.0], [1.0, 0.0]])
    txt = np.array([[1.0, 0.0], [-0.6, 0.8]])  # cosines 1 and -0.6
    assert clip_score(img, txt) == pytest.approx(20.0)  # mean(100, -60), not mean(100, 0)
    assert clip_score(img[1:], txt[1:]) == 0.0


def test_clip_score_evaluator(tiny_clip_dir, images):
    ev = get_evaluator("clip_score", clip_path=tiny_clip_dir, device="cpu")
    _, expected = torchmetrics_scores(tiny_clip_dir, images, PROMPTS)
    assert ev.run(images, PROMPTS)["clip_score"] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(MetricsError, match="8 images for 3 prompts"):
        ev.run(images, PROMPTS[:3])


def test_long_prompts_keep_their_end_token(tiny_clip_dir):
    """Truncation by the tokenizer: the last position is the end token the features are pooled at."""
    from ditcompress.metrics.clip import HFClip

    clip = HFClip(tiny_clip_dir, "cpu")
    long = "a red circle left of a blue square " * 5  # ~175 byte-level tokens > 77 positions
    tok = clip.processor.tokenizer([long], truncation=True, max_length=77, return_tensors="pt")
    assert tok["input_ids"].shape[1] == 77 and tok["input_ids"][0, -1] == clip.processor.tokenizer.eos_token_id
    with torch.no_grad():
        out = clip.model.get_text_features(**tok)
    f = (out if isinstance(out, torch.Tensor) else out.pooler_output)[0].numpy()
    assert np.allclose(clip.embed_texts([long])[0], f / np.linalg.norm(f), atol=1e-5)


def test_load_clip_tells_models_at_the_same_relative_path_apart(tiny_clip_dir, tmp_path, monkeypatch):
    """The shared loader keys a local model by what it is, not by how its path is spelt."""
    import shutil

    from safetensors.torch import load_file, save_file

    from ditcompress.metrics.clip import load_clip

    for name, scale in (("a", 1.0), ("b", 2.0)):
        shutil.copytree(tiny_clip_dir, tmp_path / name / "clip")
        (weights,) = (tmp_path / name / "clip").glob("*.safetensors")
        save_file({k: v * scale for k, v in load_file(weights).items()}, weights)
    embeds = {}
    for name in ("a", "b"):
        monkeypatch.chdir(tmp_path / name)
        embeds[name] = load_clip("clip", "cpu").embed_texts(["a red circle"])
    assert not np.allclose(embeds["a"], embeds["b"])
    monkeypatch.chdir(tmp_path / "a")
    np.testing.assert_array_equal(load_clip("clip", "cpu").embed_texts(["a red circle"]), embeds["a"])
