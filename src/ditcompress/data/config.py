"""Params of the `caption` and `generate` stages (`caption:` / `generate:` in params.yaml).

Caption defaults are the thesis's real settings (JoyCaption on LAION-aesthetic, 4.3.1). The
teacher's inference settings live in its preset (`ditcompress.models.presets`, tab. 4.3/4.4):
`for_preset` fills every one that the `generate:` section leaves unset.

`batch_size` is deliberately left out of each stage's fingerprint (see `fingerprint`), so a
run that ran out of memory can be resumed with a smaller batch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ditcompress.models.presets import PRESETS
from ditcompress.utils.config import Strict

Dtype = Literal["bfloat16", "float16", "float32"]


class CaptionConfig(Strict):
    """How images are captioned: a VLM through transformers, or the shapes world's scene metadata."""

    # the collection to caption: an image folder, webdataset .tar shards, or a shapes-world split
    source: str = Field("data/shapes/train", min_length=1)
    # "vlm": any image-text-to-text checkpoint; "scene": reads each image's metadata (shapes world)
    captioner: Literal["vlm", "scene"] = "vlm"
    model: str = Field("fancyfeast/llama-joycaption-beta-one-hf-llava", min_length=1)
    system_prompt: str = "You are a helpful image captioner."
    # JoyCaption's "descriptive, formal, long" mode, the prompt its model card recommends
    prompt: str = Field("Write a long descriptive caption for this image in a formal tone.", min_length=1)
    max_new_tokens: int = Field(512, ge=1, le=8192)
    do_sample: bool = True
    temperature: float = Field(0.6, gt=0.0, le=10.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    torch_dtype: Dtype = "bfloat16"
    trust_remote_code: bool = False  # only for checkpoints whose code is not in transformers
    source_format: Literal["auto", "folder", "webdataset", "shapes"] = "auto"
    batch_size: int = Field(16, ge=1, le=4096)
    shard_size: int = Field(1000, ge=1, le=1_000_000)  # images per caption file
    seed: int = Field(0, ge=0, le=2**31 - 1)  # sampling seed, derived per batch


# GenerateConfig field -> Preset attribute: the teacher's own inference settings
PRESET_FIELDS = {"num_images": "train_images", "height": "resolution", "width": "resolution",
                 "num_inference_steps": "num_inference_steps", "guidance_scale": "guidance_scale",
                 "max_sequence_length": "max_sequence_length", "torch_dtype": "torch_dtype",
                 "true_cfg_scale": "true_cfg_scale"}
# what they hold before `for_preset` fills them: the real PixArt-Σ teacher's (tab. 4.3)
_DEFAULTS = {f: getattr(PRESETS["pixart-sigma"], attr) for f, attr in PRESET_FIELDS.items()}


class GenerateConfig(Strict):
    """Teacher inference settings (filled from the teacher's preset by `for_preset`) and dataset layout."""

    num_images: int | None = Field(_DEFAULTS["num_images"], ge=1)  # None: one image per caption
    height: int = Field(_DEFAULTS["height"], ge=8, le=4096, multiple_of=8)  # the pipelines' latent grid
    width: int = Field(_DEFAULTS["width"], ge=8, le=4096, multiple_of=8)
    # PixArt: classifier-free guidance scale; Flux-dev: the distilled guidance embedding
    guidance_scale: float = Field(_DEFAULTS["guidance_scale"], ge=0.0, le=50.0)
    num_inference_steps: int = Field(_DEFAULTS["num_inference_steps"], ge=1, le=1000)
    max_sequence_length: int = Field(_DEFAULTS["max_sequence_length"], ge=1, le=4096)
    negative_prompt: str = ""  # PixArt's CFG; Flux's only when true_cfg_scale > 1
    # Flux only: > 1 adds a negative-prompt branch (FluxPipeline's true CFG); see `Preset.true_cfg_scale`
    true_cfg_scale: float = Field(_DEFAULTS["true_cfg_scale"], ge=1.0, le=50.0)
    torch_dtype: Dtype = _DEFAULTS["torch_dtype"]
    # png is lossless, so students learn the teacher's exact outputs; jpg (quality 95) is ~8x smaller
    image_format: Literal["png", "jpg"] = "png"
    batch_size: int = Field(8, ge=1, le=4096)
    shard_size: int = Field(256, ge=1, le=1_000_000)  # images per tar shard
    seed: int = Field(0, ge=0, le=2**31 - 1)  # base of every per-image seed (`seed_for`)


def for_preset(cfg: GenerateConfig, preset) -> GenerateConfig:
    """`cfg` with every inference setting that params.yaml leaves unset taken from the teacher's preset.

    So `dvc exp run -S model.preset=flux-dev` generates at 1024 px with 50 steps, while a key set
    explicitly in the `generate:` section (e.g. `-S generate.num_images=500`) still wins.
    """
    unset = {f: getattr(preset, attr) for f, attr in PRESET_FIELDS.items() if f not in cfg.model_fields_set}
    return GenerateConfig.model_validate({**cfg.model_dump(), **unset})


_NOT_IN_FINGERPRINT = {"batch_size"}


def fingerprint(cfg: Strict) -> dict:
    """The settings that decide a stage's output; a resumed run must match them exactly."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NOT_IN_FINGERPRINT}
