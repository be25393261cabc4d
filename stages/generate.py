"""Stage `generate`: the teacher's training set from the caption set (thesis 4.3, tab. 4.3/4.4).

    dvc repro generate                      # shapes world: 1000 images at 32 px, ~1-2 min on a CPU
    accelerate launch stages/generate.py    # N GPUs; the union equals a 1-process run

Inference settings not set in the `generate:` section come from the teacher's preset
(`model.preset`), e.g. 512 px / 20 steps / CFG 3.5 / 300 tokens for pixart-sigma. Resumable like
`caption`: a killed run continues where it stopped; changed settings start over.
"""

from pathlib import Path

from ditcompress.runner import run_stage

CAPTIONS, OUT = Path("data/captions"), Path("data/teacher")


def main(params, run):
    from ditcompress.data.config import for_preset
    from ditcompress.data.generate import run_generate
    from ditcompress.models.presets import teacher_preset

    preset = teacher_preset(params.model)
    cfg = for_preset(params.generate, preset)
    return run_generate(cfg, CAPTIONS, preset.pretrained, preset.family, OUT, run, restart_if_changed=True)


if __name__ == "__main__":
    run_stage("generate", ["generate"], main)
