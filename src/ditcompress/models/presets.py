"""Named teachers (`model.preset` in params.yaml): the shapes world or the real hub models.

Switching the whole pipeline to a real model is one override:
`dvc exp run -S model.preset=pixart-sigma`. A teacher's inference settings (thesis tab. 4.3/4.4)
live only here: `data.config.for_preset` fills every `generate:` key that params.yaml leaves unset.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Where a teacher comes from and how it generates by default."""

    family: str  # adapter name: "pixart" | "flux"
    pretrained: str  # hub id or a path relative to the repository root
    resolution: int
    num_inference_steps: int
    guidance_scale: float
    max_sequence_length: int
    shapes_world: bool  # built by the pretrain stage instead of downloaded
    torch_dtype: str = "bfloat16"  # inference dtype of the generate / evaluate stages
    train_images: int = 100_000  # size of the teacher-generated training set (thesis tab. 4.3/4.4)
    # Flux: FluxPipeline's true CFG (a negative-prompt branch) when > 1. FLUX.1-dev is
    # guidance-distilled (guidance_scale feeds its guidance embedding); the shapes Flux teacher is
    # not, its guidance embedding always saw 3.5, so it needs true CFG like PixArt
    true_cfg_scale: float = 1.0


PRESETS: dict[str, Preset] = {
    # the shapes world: tiny teachers in float32 on a CPU; 1000 images generate in ~1.5 min
    "shapes-pixart": Preset("pixart", "models/shapes/pixart", 32, 20, 3.5, 16, True, "float32", 1000),
    "shapes-flux": Preset("flux", "models/shapes/flux", 32, 20, 3.5, 16, True, "float32", 1000,
                          true_cfg_scale=3.5),
    "pixart-sigma": Preset("pixart", "PixArt-alpha/PixArt-Sigma-XL-2-512-MS", 512, 20, 3.5, 300, False,
                           "bfloat16", 100_000),
    "flux-dev": Preset("flux", "black-forest-labs/FLUX.1-dev", 1024, 50, 3.5, 512, False, "bfloat16", 190_000),
}


def teacher_preset(model) -> Preset:
    """The preset of the `model:` section, with `model.pretrained` in place of its weights when set."""
    from dataclasses import replace

    preset = get_preset(model.preset)
    return preset if model.pretrained is None else replace(preset, pretrained=model.pretrained)


def get_preset(name: str) -> Preset:
    """The preset called `name`; a one-line error lists the known ones."""
    if name not in PRESETS:
        from ditcompress.errors import UserError

        raise UserError(f"model.preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]
