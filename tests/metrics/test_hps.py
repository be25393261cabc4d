"""HPSv2 benchmark aggregation and the evaluator on a tiny open_clip ViT in the HPS checkpoint layout."""

import json

import numpy as np
import pytest
import torch

from ditcompress.metrics import MetricsError, get_evaluator, hps_benchmark_aggregate, load_hps_prompts


def test_aggregate_is_mean_of_80_image_chunk_means():
    rng = np.random.default_rng(0)
    full = rng.normal(25, 3, 800)  # ten full chunks
    partial = np.concatenate([np.full(80, 10.0), np.full(80, 20.0), np.full(10, 40.0)])  # 80 + 80 + 10
    out = hps_benchmark_aggregate({"anime": full, "photo": partial})
    chunks = [full[i:i + 80].mean() for i in range(0, 800, 80)]
    assert out["anime"] == pytest.approx(np.mean(chunks), abs=1e-12)
    assert out["anime_std"] == pytest.approx(np.std(chunks), abs=1e-12)
    assert out["photo"] == pytest.approx((10 + 20 + 40) / 3)  # chunk means, not the image mean (15.29...)
    assert out["photo_std"] == pytest.approx(np.std([10.0, 20.0, 40.0]))
    # overall: the mean over all images, as the reference's `all_score`
    assert out["overall"] == pytest.approx((full.sum() + 80 * 10 + 80 * 20 + 10 * 40) / 970)


def test_prompt_files_errors_name_the_file(tmp_path):
    with pytest.raises(MetricsError, match="HPS prompt folder not found"):
        load_hps_prompts(tmp_path / "nowhere")
    (tmp_path / "anime.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(MetricsError, match=r"concept-art\.json: HPS prompt file not found") as err:
        load_hps_prompts(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "concept-art.json").write_text(json.dumps({"prompts": ["a"]}))
    with pytest.raises(MetricsError, match=r"concept-art\.json: expected a non-empty JSON list"):
        load_hps_prompts(tmp_path)
    (tmp_path / "concept-art.json").write_text("['a', 'b'")
    with pytest.raises(MetricsError, match=r"concept-art\.json: not valid JSON"):
        load_hps_prompts(tmp_path)


def _reference_scores(arch, checkpoint, images, prompts):
    """100 * cos(image, text) with open_clip directly, HPSv2 `evaluation.py` style."""
    import open_clip
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, output_dict=True)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    x = torch.stack([preprocess(Image.fromarray(im)) for im in images])
    with torch.no_grad():
        out = model(x, open_clip.get_tokenizer(arch)(prompts))
    return 100 * (out["image_features"] * out["text_features"]).sum(-1).numpy()


def test_hps_evaluator_on_tiny_open_clip(tiny_hps, tmp_path):
    ev = get_evaluator("hps", checkpoint=tiny_hps["checkpoint"], prompts_dir=tiny_hps["prompts_dir"],
                       model=tiny_hps["arch"], device="cpu", batch_size=5)
    items = ev.items()
    assert [it["style"] for it in items[:4]] == ["anime"] * 3 + ["concept-art"]  # 3, 4, 5, 6 prompts
    images = np.random.default_rng(0).integers(0, 256, (len(items), 36, 36, 3), dtype=np.uint8)
    out = ev.run(images)
    expected = _reference_scores(tiny_hps["arch"], tiny_hps["checkpoint"], images, [it["prompt"] for it in items])
    assert out["hpsv2.1/anime"] == pytest.approx(expected[:3].mean(), abs=1e-4)
    assert out["hpsv2.1/photo"] == pytest.approx(expected[-6:].mean(), abs=1e-4)
    assert out["hpsv2.1/overall"] == pytest.approx(expected.mean(), abs=1e-4)
    # the checkpoint matters: a freshly initialised model scores differently
    import open_clip

    torch.manual_seed(123)
    fresh = open_clip.create_model(tiny_hps["arch"], pretrained=None)
    torch.save({"state_dict": fresh.state_dict()}, tmp_path / "fresh.pt")
    other = _reference_scores(tiny_hps["arch"], tmp_path / "fresh.pt", images[:3],
                              [it["prompt"] for it in items[:3]])
    assert not np.allclose(other, expected[:3], atol=1e-3)


def test_hps_needs_checkpoint_and_enough_images(tiny_hps, tmp_path):
    with pytest.raises(MetricsError, match="must both be set"):
        get_evaluator("hps", prompts_dir=tiny_hps["prompts_dir"])
    with pytest.raises(MetricsError, match="missing.pt: HPS checkpoint not found"):
        get_evaluator("hps", checkpoint=str(tmp_path / "missing.pt"), prompts_dir=tiny_hps["prompts_dir"])
    ev = get_evaluator("hps", checkpoint=tiny_hps["checkpoint"], prompts_dir=tiny_hps["prompts_dir"],
                       model=tiny_hps["arch"], device="cpu")
    with pytest.raises(MetricsError, match="hps: got 2 images for 18 prompts"):
        ev.run(np.zeros((2, 8, 8, 3), np.uint8))
