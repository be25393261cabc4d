"""Stage `pretrain`: train the shapes world's tiny model zoo (VAEs, CLIP, PixArt and Flux teachers).

    dvc repro pretrain        # ~61 min on a 2-core CPU (two components at a time); cached by DVC afterwards

Writes `models/shapes/{pixart,flux,clip}` in the hub layout (the `shapes-*` presets load them
with the stock diffusers / transformers loaders) and `models/shapes/samples/*.png`.
"""

from pathlib import Path

from ditcompress.runner import run_stage

DATA, OUT = Path("data/shapes"), Path("models/shapes")


def main(params, run):
    """Train and save the zoo; its figures (losses, reconstruction, CLIP ranking, times) are the metrics."""
    from ditcompress.zoo.pretrain import run_pretrain

    return run_pretrain(params.pretrain, DATA, OUT, params.seed, run)


if __name__ == "__main__":
    run_stage("pretrain", ["data", "pretrain"], main)
