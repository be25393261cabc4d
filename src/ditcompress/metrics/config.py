"""Params of the evaluate section (`evaluate:` in params.yaml): which metrics, and each one's options."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ditcompress.utils.config import Strict

METRIC_NAMES = ("cmmd", "clip_score", "fid", "clip_fd", "hps", "geneval", "dpg")


class CMMDConfig(Strict):
    """CMMD kernel and estimator (google-research defaults)."""

    sigma: float = Field(10.0, gt=0)
    scale: float = Field(1000.0, gt=0)
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
    model: str = "ViT-H-14"
    version: Literal["v2", "v2.1"] = "v2.1"
    max_prompts_per_style: int | None = Field(None, ge=1)  # a quick subset; None = all 800


class GenEvalConfig(Strict):
    """GenEval prompts, detector and the reference's thresholds."""

    metadata: str = "data/shapes/eval/geneval_metadata.jsonl"
    images_per_prompt: int = Field(4, ge=1)
    detector: str = "shapes"  # "shapes" | "mask2former" | "package.module:Class"
    detector_path: str | None = None  # Mask2Former checkpoint dir (COCO instance)
    color_clip: str | None = None  # CLIP for colour; None = colours from the detector (shapes)
    threshold: float = Field(0.3, ge=0, le=1)
    counting_threshold: float = Field(0.9, ge=0, le=1)
    max_objects: int = Field(16, ge=1)
    nms_threshold: float = Field(1.0, gt=0, le=1)
    position_threshold: float = Field(0.1, ge=0)


class DPGConfig(Strict):
    """DPG-Bench questions and VQA backend ("shapes" or a transformers VQA model path)."""

    questions: str = "data/shapes/eval/dpg_questions.csv"
    images_per_prompt: int = Field(1, ge=1)
    vqa: str = "shapes"


class EvaluateConfig(Strict):
    """The evaluate stage: metric names (evaluators) and their options."""

    metrics: tuple[str, ...] = ("cmmd", "clip_score", "clip_fd", "geneval", "dpg")
    clip_path: str = "openai/clip-vit-large-patch14-336"  # CMMD, clip_fd (the shapes CLIP in the shapes world)
    clip_score_path: str | None = None  # CLIP for the CLIP score; None = clip_path
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
