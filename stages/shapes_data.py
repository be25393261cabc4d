"""Stage `shapes_data`: build the procedural shapes dataset (train / reference / eval prompts).

    dvc repro shapes_data        # ~20 s on 2 CPU cores at the default 20k images
"""

from pathlib import Path

from ditcompress.runner import run_stage
from ditcompress.shapes.dataset import build_dataset, load_split
from ditcompress.utils.grid import sample_grid

OUT = Path("data/shapes")


def main(params, run):
    """Write the dataset and log a grid of training samples."""
    stats = build_dataset(params.data, params.seed, OUT)
    train = load_split(OUT / "train")
    run.log_image(sample_grid(train.images[:64], train.captions[:64]), "train_samples.png")
    return stats


if __name__ == "__main__":
    run_stage("shapes_data", ["data"], main)
