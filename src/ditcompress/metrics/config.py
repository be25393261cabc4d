"""Params of the evaluate section (`evaluate:` in params.yaml): which metrics, and each one's options.

The references' models, files and settings (CLIP ids, CMMD kernel, GenEval prompts and rules)
are stated once, here; the evaluator classes take their defaults from this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ditcompress.utils.config import Strict

# metric name -> "module:Evaluator" (imported on first use, so validating names loads no torch)
EVALUATORS = {
    "cmmd": "ditcompress.metrics.cmmd:CMMDEvaluator",
    "clip_score": "ditcompress.metrics.clip:ClipScoreEvaluator",
    "fid": "ditcompress.metrics.frechet:FIDEvaluator",
    "clip_fd": "ditcompress.metrics.frechet:ClipFDEvaluator",
    "hps": "ditcompress.metrics.hps:HPSEvaluator",
    "geneval": "ditcompress.metrics.geneval:GenEvalEvaluator",
    "dpg": "ditcompress.metrics.dpg:DPGEvaluator",
}
METRIC_NAMES = tuple(EVALUATORS)

# google-research cmmd's CLIP (ViT-L/14 at 336 px): CMMD, the CLIP Fréchet distance, FID's fallback
CMMD_CLIP = "openai/clip-vit-large-patch14-336"
CMMD_SIGMA = 10.0  # RBF bandwidth of the reference
CMMD_SCALE = 1000.0  # the reference reports 1000 x MMD^2
# torchmetrics `CLIPScore`'s default model
CLIP_SCORE_CLIP = "openai/clip-vit-large-patch14"
GENEVAL_METADATA = "data/shapes/eval/geneval_metadata.jsonl"  # written by the shapes_data stage
GENEVAL_IMAGES_PER_PROMPT = 4  # the GenEval reference's
DPG_QUESTIONS = "data/shapes/eval/dpg_questions.csv"  # written by the shapes_data stage
HPS_ARCH = "ViT-H-14"  # open_clip architecture of the HPSv2 checkpoints


@dataclass(frozen=True)
class GenEvalRules:
    """The GenEval reference's options (`--options` of evaluate_images.py) with their defaults."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    nms_threshold: float = 1.0
    position_threshold: float = 0.1


_RULES = GenEvalRules()


class CMMDConfig(Strict):
    """CMMD kernel and estimator (google-research defaults)."""

    sigma: float = Field(CMMD_SIGMA, gt=0)
    scale: float = Field(CMMD_SCALE, gt=0)
    # False: the reference estimator (diagonal kept, reported as `cmmd`);
    # True: thesis eq 2.92 (diagonal dropped, reported as `cmmd_unbiased`)
    unbiased: bool = False


class FIDConfig(Strict):
    """FID needs torch-fidelity Inception weights on disk; without them `fid` reports `clip_fd`."""

    inception_weights: str | None = None


class HPSConfig(Strict):
    """HPSv2 benchmark: open_clip architecture, HPS checkpoint, and the four style prompt files."""

    checkpoint: str | None = None  # e.g. HPS_v2.1_compressed.pt from hub repo xswu/HPSv2
    prompts_dir: str | None = None  # holds anime.json, concept-art.json, paintings.json, photo.json
    model: str = HPS_ARCH
    version: Literal["v2", "v2.1"] = "v2.1"
    max_prompts_per_style: int | None = Field(None, ge=1)  # a quick subset; None = all 800


class GenEvalConfig(Strict):
    """GenEval prompts, detector and the reference's thresholds."""

    metadata: str = GENEVAL_METADATA
    images_per_prompt: int = Field(GENEVAL_IMAGES_PER_PROMPT, ge=1)
    detector: str = "shapes"  # "shapes" | "mask2former" | "package.module:Class"
    detector_path: str | None = None  # Mask2Former checkpoint dir (COCO instance)
    color_clip: str | None = None  # CLIP for colour; None = colours from the detector (shapes)
    threshold: float = Field(_RULES.threshold, ge=0, le=1)
    counting_threshold: float = Field(_RULES.counting_threshold, ge=0, le=1)
    max_objects: int = Field(_RULES.max_objects, ge=1)
    nms_threshold: float = Field(_RULES.nms_threshold, gt=0, le=1)
    position_threshold: float = Field(_RULES.position_threshold, ge=0)

    def rules(self) -> GenEvalRules:
        """The scoring options as the evaluator takes them."""
        return GenEvalRules(self.threshold, self.counting_threshold, self.max_objects, self.nms_threshold,
                            self.position_threshold)


class DPGConfig(Strict):
    """DPG-Bench questions and VQA backend ("shapes" or a transformers VQA model path)."""

    questions: str = DPG_QUESTIONS
    images_per_prompt: int = Field(1, ge=1)
    vqa: str = "shapes"


class EvaluateConfig(Strict):
    """The evaluate stage: metric names (evaluators) and their options."""

    metrics: tuple[str, ...] = ("cmmd", "clip_score", "clip_fd", "geneval", "dpg")
    clip_path: str = CMMD_CLIP  # CMMD, clip_fd and FID's fallback (the shapes CLIP in the shapes world)
    # the CLIP score's model; unset: torchmetrics' CLIP_SCORE_CLIP beside the reference CMMD CLIP,
    # otherwise clip_path itself (one CLIP for every metric, e.g. the shapes CLIP)
    clip_score_path: str = CLIP_SCORE_CLIP
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    batch_size: int = Field(32, ge=1, le=4096)
    cache_dir: str | None = None  # on-disk embedding cache (.npy); None = memory only
    # the evaluate stage: models to render besides the teacher (name -> saved student directory)
    students: dict[str, str] = {}
    # reference images for CMMD / Fréchet distances; their captions are the prompts of CMMD,
    # CLIP score and the Fréchet distances. A shapes split carries captions; an image folder or
    # .tar shards need a caption set (`reference_captions`, the caption stage's output format)
    reference: str = Field("data/shapes/reference", min_length=1)
    reference_captions: str | None = None
    reference_images: int | None = Field(None, ge=1)  # the first N reference images; None = all
    cmmd: CMMDConfig = CMMDConfig()
    fid: FIDConfig = FIDConfig()
    hps: HPSConfig = HPSConfig()
    geneval: GenEvalConfig = GenEvalConfig()
    dpg: DPGConfig = DPGConfig()

    @model_validator(mode="before")
    @classmethod
    def _clip_score_path(cls, data: Any) -> Any:
        """An unset `clip_score_path` follows `clip_path` unless that is the reference CMMD CLIP."""
        if isinstance(data, dict) and data.get("clip_score_path") is None:
            clip = data.get("clip_path", CMMD_CLIP)
            data = {**data, "clip_score_path": CLIP_SCORE_CLIP if clip == CMMD_CLIP else clip}
        return data

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        """Every name is a registered evaluator, listed once."""
        for name in names:
            if name not in METRIC_NAMES:
                raise ValueError(f"unknown metric {name!r} (known: {', '.join(METRIC_NAMES)})")
        if len(set(names)) != len(names):
            raise ValueError(f"metric listed twice ({', '.join(names)})")
        return names

    @field_validator("students")
    @classmethod
    def _student_names(cls, students: dict[str, str]) -> dict[str, str]:
        """Student names become folder names and metric prefixes; "teacher" is taken."""
        for name in students:
            if name == "teacher" or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"student name {name!r} must be a folder name other than 'teacher' "
                                 "(letters, digits, '_', '.', '-')")
        return students

    @model_validator(mode="after")
    def _metric_inputs_configured(self):
        """Metrics without usable defaults have their inputs set."""
        if "hps" in self.metrics and (self.hps.checkpoint is None or self.hps.prompts_dir is None):
            raise ValueError("hps.checkpoint and hps.prompts_dir must be set when metrics include 'hps'")
        if "geneval" in self.metrics and self.geneval.detector == "mask2former" and not self.geneval.detector_path:
            raise ValueError("geneval.detector_path must be set for the mask2former detector")
        return self
