"""Evaluators by name, the evaluate config, and `evaluate` on a generator or an image folder."""

import inspect

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from ditcompress.metrics import (EVALUATORS, METRIC_NAMES, EmbeddingCache, EvaluateConfig, GenEvalRules, ImageSet,
                                 MetricsError, build_evaluators, evaluate, get_evaluator, image_set_from_folder)
from ditcompress.metrics.clip import ClipScoreEvaluator
from ditcompress.metrics.cmmd import CMMDEvaluator, cmmd
from ditcompress.metrics.config import (CLIP_SCORE_CLIP, CMMD_CLIP, CMMD_SCALE, CMMD_SIGMA, GENEVAL_METADATA,
                                        GenEvalConfig)
from ditcompress.metrics.frechet import ClipFDEvaluator, FIDEvaluator
from ditcompress.metrics.geneval import GenEvalEvaluator
from ditcompress.metrics.registry import evaluator_options

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


def test_metric_names_are_the_registered_evaluators():
    assert METRIC_NAMES == tuple(EVALUATORS) == ("cmmd", "clip_score", "fid", "clip_fd", "hps", "geneval", "dpg")
    assert set(EvaluateConfig().metrics) <= set(METRIC_NAMES)


def _default(fn, name):
    """The default value of parameter `name` of `fn`."""
    return inspect.signature(fn).parameters[name].default


def test_reference_models_and_files_are_defaults_everywhere():
    # google-research cmmd: ViT-L/14 at 336 px, sigma 10, scale 1000; torchmetrics CLIPScore: ViT-L/14
    assert CMMD_CLIP == "openai/clip-vit-large-patch14-336" and (CMMD_SIGMA, CMMD_SCALE) == (10.0, 1000.0)
    assert CLIP_SCORE_CLIP == "openai/clip-vit-large-patch14"
    for cls in (CMMDEvaluator, ClipFDEvaluator, FIDEvaluator):
        assert _default(cls, "clip_path") == CMMD_CLIP
    assert _default(ClipScoreEvaluator, "clip_path") == CLIP_SCORE_CLIP
    assert (_default(cmmd, "sigma"), _default(cmmd, "scale")) == (_default(CMMDEvaluator, "sigma"),
                                                                  _default(CMMDEvaluator, "scale")) == (10.0, 1000.0)
    assert _default(GenEvalEvaluator, "metadata") == GenEvalConfig().metadata == GENEVAL_METADATA
    assert _default(GenEvalEvaluator, "images_per_prompt") == GenEvalConfig().images_per_prompt == 4
    assert GenEvalConfig().rules() == GenEvalRules() == GenEvalRules(0.3, 0.9, 16, 1.0, 0.1)


def test_config_routes_the_cmmd_and_clip_score_models():
    options = lambda cfg, name: evaluator_options(name, cfg)["clip_path"]  # noqa: E731
    real = EvaluateConfig()  # the references: 336 px CLIP for CMMD / clip_fd, torchmetrics' for the CLIP score
    assert [options(real, m) for m in ("cmmd", "clip_fd", "fid", "clip_score")] == [CMMD_CLIP] * 3 + [CLIP_SCORE_CLIP]
    assert EvaluateConfig(clip_path=CMMD_CLIP).clip_score_path == CLIP_SCORE_CLIP
    shapes = EvaluateConfig(clip_path="models/shapes/clip")  # one CLIP serves every metric
    assert {options(shapes, m) for m in ("cmmd", "clip_fd", "fid", "clip_score")} == {"models/shapes/clip"}
    other = "openai/clip-vit-base-patch32"
    both = EvaluateConfig(clip_path="models/shapes/clip", clip_score_path=other)
    assert (options(both, "cmmd"), options(both, "clip_score")) == ("models/shapes/clip", other)
    assert EvaluateConfig.model_validate(both.model_dump()) == both


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
