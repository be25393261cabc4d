"""The shipped params.yaml shrunk to test size: the one copy behind the zoo's tests and the DVC end-to-end test.

As lightning-hydra-template does, tests build the real config and change only sizes, step
counts and threads, so they run the code path of `dvc repro`: every architectural switch (VAE
depth, prediction type, schedules, ...) stays as shipped.
"""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

SHRINK = {
    # a tiny dataset; image_size stays as shipped (the shapes presets sample at 32 px)
    "data": {"n_train": 96, "n_reference": 8, "prompts_per_task": 2, "dpg_prompts": 2},
    # one- and two-block models trained for a few steps
    "pretrain": {
        "threads": 1,
        "text": {"width": 16, "heads": 2, "layers": 1},
        # three levels as shipped: the same 4x down-sampling, narrower
        "vae": {"channels": [8, 8, 8], "norm_groups": 4, "steps": 8, "batch_size": 8},
        "clip": {"width": 16, "heads": 2, "layers": 1, "projection_dim": 16, "steps": 8, "batch_size": 16,
                 "warmup_steps": 2},
        "pixart": {"layers": 2, "heads": 2, "head_dim": 8, "steps": 6, "batch_size": 8, "warmup_steps": 2},
        "flux": {"double_layers": 1, "single_layers": 1, "heads": 2, "head_dim": 8, "axes_dims_rope": [2, 2, 4],
                 "steps": 6, "batch_size": 8, "warmup_steps": 2},
        "grid_prompts_per_task": 1,
    },
    "caption": {"shard_size": 16},
    "generate": {"num_images": 40, "num_inference_steps": 4, "shard_size": 16, "batch_size": 8},
    "evaluate": {"geneval": {"images_per_prompt": 1}},
    # the shrunken PixArt teacher has 2 blocks: remove one; the reference set has 8 images
    "score": {"prompts": 8, "cka_prompts": 2, "batch_size": 8, "damage_images_per_prompt": 1,
              "selection": {"k": 1, "n_trials": 3}},
    # a few steps of each phase of the default protocol
    "distill": {"steps": {"local": 2, "global": 3, "domain": 2}, "batch_size": 4, "sample_prompts": 2,
                "checkpoint_every": 2},
    # one progressive round: removing either of the 2 blocks keeps ~72% of the teacher
    "schedule": {"target": 0.8, "steps": {"local": 1, "global": 1, "domain": 1}},
}


def merge(base: dict, over: dict) -> dict:
    """Recursive dict update (returns a new dict)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def shrunk_params(overrides: dict | None = None) -> dict:
    """The raw params.yaml mapping with `SHRINK`, then `overrides` (section -> fields), merged in."""
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    return merge(merge(shipped, SHRINK), overrides or {})


# the session's `world` fixture (tests/conftest.py): the prompt counts its tests spell out
WORLD = shrunk_params({"data": {"n_train": 48, "n_reference": 6, "prompts_per_task": 1, "dpg_prompts": 2}})


def params_with(raw: dict, **sections):
    """Parsed params of `raw` with each section's fields updated (a fresh copy; `raw` is untouched)."""
    import json

    from ditcompress.params import parse_params

    out = json.loads(json.dumps(raw))
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value}
    return parse_params(out)
