"""Evaluators by name, the evaluate config, and `evaluate` on a generator or an image folder."""

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from ditcompress.metrics import (EmbeddingCache, EvaluateConfig, ImageSet, MetricsError, build_evaluators, evaluate,
                                 get_evaluator, image_set_from_folder)

PROMPTS = [f"prompt {i}" for i in range(4)]


def test_unknown_metric_is_a_one_line_error_naming_it():
    with pytest.raises(MetricsError, match="unknown metric 'fidd'") as err:
        get_evaluator("fidd")
    assert "\n" not in str(err.value) and "cmmd" in str(err.value)
    with pytest.raises(MetricsError, match="cmmd: got an unexpected keyword argument 'sigmaa'"):
        get_evaluator("cmmd", sigmaa=3.0)


def test_config_rejects_unknown_metric_and_keys():
    with pytest.raises(ValidationError) as err:
        EvaluateConfig(metrics=["cmmd", "fidd"])
    first = err.value.errors()[0]
    assert first["loc"] == ("metrics",) and "unknown metric 'fidd'" in first["msg"]
    with pytest.raises(ValidationError) as err:
        EvaluateConfig(cmmd={"sigam": 3})
    assert err.value.errors()[0]["loc"] == ("cmmd", "sigam")
    with pytest.raises(ValidationError, match="hps.checkpoint and hps.prompts_dir must be set"):
        EvaluateConfig(metrics=["hps"])


def test_evaluate_with_a_generator_embeds_each_set_once(tiny_clip_dir, images):
    cfg = EvaluateConfig(metrics=["cmmd", "clip_fd", "clip_score", "fid"], clip_path=tiny_clip_dir, device="cpu")
    cache = EmbeddingCache()
    evaluators = build_evaluators(cfg, cache=cache)
    reference = ImageSet(images[:4], PROMPTS, id="teacher")
    calls = []

    def generate(prompts):
        """A stand-in pipeline: records its prompts."""
        calls.append(list(prompts))
        return images[4:4 + len(prompts)]

    seen = {}
    out = evaluate(evaluators, generate=generate, prompts=PROMPTS, reference=reference,
                   on_images=lambda group, ims: seen.setdefault(group, len(ims)))
    assert set(out) == {"cmmd", "clip_fd", "clip_score"} and seen == {"prompts": 4}  # fid without Inception weights reports clip_fd
    assert calls == [PROMPTS]  # one generation for all reference-set metrics
    assert cache.misses == 3  # teacher (CMMD preprocessing), generated (CMMD), generated (CLIP-score processor)
    evaluate(evaluators, generate=generate, prompts=PROMPTS, reference=reference)
    assert cache.misses == 5  # the teacher set is not embedded again
    same = evaluate(evaluators, generate=lambda p: images[:4], prompts=PROMPTS, reference=reference)
    assert same["cmmd"] == 0.0 and same["clip_fd"] == pytest.approx(0.0, abs=1e-6)


def save_images(folder, arrays):
    """PNG files 00000.png, 00001.png, ... in a new folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:05d}.png")


def test_evaluate_on_an_image_folder(tiny_clip_dir, images, tmp_path):
    save_images(tmp_path / "ref", images[:4])
    save_images(tmp_path / "student" / "prompts", images[4:])
    reference = image_set_from_folder(tmp_path / "ref", PROMPTS)
    evaluators = build_evaluators(EvaluateConfig(metrics=["cmmd"], clip_path=tiny_clip_dir, device="cpu"),
                                  cache=EmbeddingCache(tmp_path / "cache"))
    from_folder = evaluate(evaluators, image_dir=tmp_path / "student", prompts=PROMPTS, reference=reference)
    from_arrays = get_evaluator("cmmd", clip_path=tiny_clip_dir, device="cpu").run(
        images[4:], reference=ImageSet(images[:4]))
    assert from_folder["cmmd"] == pytest.approx(from_arrays["cmmd"], abs=1e-6)  # PNG is lossless
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # reference and student embeddings persisted
    with pytest.raises(MetricsError, match=r"prompts: 4 images for 6 prompts \(fewer images than prompts\)") as err:
        evaluate(evaluators, image_dir=tmp_path / "student", prompts=PROMPTS + ["a", "b"], reference=reference)
    assert "\n" not in str(err.value)
    with pytest.raises(MetricsError, match="nowhere/prompts: image folder not found"):
        evaluate(evaluators, image_dir=tmp_path / "nowhere", prompts=PROMPTS, reference=reference)
    with pytest.raises(MetricsError, match="^cmmd: need a reference image set"):
        evaluate(evaluators, image_dir=tmp_path / "student", prompts=PROMPTS)


def test_disk_cache_round_trip(tmp_path):
    calls = []

    def compute():
        """Counts its calls."""
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    first = EmbeddingCache(tmp_path).get_or_compute("clip:x", "set/a", compute)
    again = EmbeddingCache(tmp_path).get_or_compute("clip:x", "set/a", compute)  # a new process
    assert len(calls) == 1 and np.array_equal(first, again)
    EmbeddingCache(tmp_path).get_or_compute("clip:x", "tmp:123", compute)
    assert len(list(tmp_path.glob("*.npy"))) == 1  # "tmp:" sets stay in memory


def test_build_evaluators_takes_object_overrides(tmp_path):
    meta = tmp_path / "geneval_metadata.jsonl"
    meta.write_text('{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a circle"}\n')
    detector = object()
    cfg = EvaluateConfig(metrics=["geneval"], geneval={"metadata": str(meta), "images_per_prompt": 2})
    ev = build_evaluators(cfg, overrides={"geneval": {"detector": detector}})["geneval"]
    assert ev.detector is detector and len(ev.items()) == 2
    with pytest.raises(MetricsError, match="overrides for metrics not configured: dpg"):
        build_evaluators(cfg, overrides={"dpg": {}})
