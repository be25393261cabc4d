"""GenEval figures of a trained shapes-world zoo (the README's table), scored with the exact shapes detector.

    python bench/shapes_world_figures.py [--zoo models/shapes] [--data data/shapes] [--json out.json]

One image per GenEval eval prompt (96 by default) for each row: the ground-truth renders, their
VAE round trip (the ceiling a teacher can reach through its VAE), each teacher through its saved
pipeline with the preset's sampler (`shapes-pixart` / `shapes-flux` in models/presets.py), and the
PixArt teacher with a third of its blocks removed without retraining (several choices of blocks).
Model rows are scored by `metrics.benchmark.model_geneval` (image k from `seed_for(seed, "geneval/k")`,
the evaluate stage's seeds). Also prints the tiny CLIP's caption-ranking accuracy.
About a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ditcompress.compress import remove_blocks
from ditcompress.metrics import get_evaluator
from ditcompress.metrics.benchmark import model_geneval
from ditcompress.metrics.geneval import GENEVAL_TASKS
from ditcompress.sampling import Renderer, preset_settings
from ditcompress.shapes.dataset import load_split, read_geneval_metadata
from ditcompress.shapes.detector import ShapesDetector
from ditcompress.shapes.truth import scene_satisfies
from ditcompress.shapes.vocab import SHAPES
from ditcompress.zoo.common import images_to_tensor, tensor_to_images
from ditcompress.zoo.vae import encode_modes


def block_choices(n_layers: int) -> dict[str, list[str]]:
    """Ways to remove a third of `n_layers` PixArt blocks: evenly spaced, the last ones, the first ones."""
    k = max(1, round(n_layers / 3))
    even = sorted({int(np.floor((j + 0.5) * n_layers / k)) for j in range(k)})
    return {"even": [str(i) for i in even],
            "last": [str(i) for i in range(n_layers - k, n_layers)],
            "first": [str(i) for i in range(k)]}


@torch.no_grad()
def vae_round_trip(vae, images: np.ndarray) -> np.ndarray:
    """Images encoded to the posterior mean and decoded again."""
    return tensor_to_images(vae.decode(encode_modes(vae, images_to_tensor(images))).sample)


@torch.no_grad()
def clip_ranking(clip_dir: Path, truth) -> float:
    """How often an eval image's caption scores above a caption it does not satisfy (tiny CLIP)."""
    from transformers import CLIPModel, CLIPProcessor

    from ditcompress.zoo.clip import caption_ranking_accuracy

    model, processor = CLIPModel.from_pretrained(clip_dir), CLIPProcessor.from_pretrained(clip_dir)
    mismatched = np.array([[not scene_satisfies(scene, item) for item in truth.items] for scene in truth.scenes])
    return caption_ranking_accuracy(model, processor, truth.images, truth.captions, mismatched)


def figures(zoo: Path, data: Path, seed: int = 0, threads: int = 2) -> dict[str, dict[str, float]]:
    """{row name: {task: accuracy, "overall": mean over tasks, "seconds": time to make the images}}."""
    torch.set_num_threads(threads)
    metadata = data / "eval" / "geneval_metadata.jsonl"
    items = read_geneval_metadata(metadata)
    prompts = [it["prompt"] for it in items]
    asked = {req["class"] for it in items for req in it["include"]}  # the dataset's vocabulary
    detector = ShapesDetector([name for name in SHAPES if name in asked])
    geneval = get_evaluator("geneval", metadata=str(metadata), images_per_prompt=1, detector=detector,
                            device="cpu")
    truth = load_split(data / "eval" / "geneval_truth")
    if [it["prompt"] for it in truth.items] != prompts:
        raise SystemExit(f"{data}: geneval_truth is not in the order of geneval_metadata.jsonl")

    rows: dict[str, dict[str, float]] = {}

    def add(name: str, score) -> None:
        start = time.perf_counter()
        scores = score()  # set_id None: detections are never cached across rows
        rows[name] = {**{t: scores[f"geneval/{t}"] for t in GENEVAL_TASKS}, "overall": scores["geneval/overall"],
                      "seconds": time.perf_counter() - start}
        print(f"  {name}: overall {rows[name]['overall']:.3f} ({rows[name]['seconds']:.0f} s)", flush=True)

    add("ground truth", lambda: geneval.run(truth.images))
    renderers = {f: Renderer.load(zoo / f, f, preset_settings(f"shapes-{f}", batch_size=64)) for f in ("pixart", "flux")}
    for family, renderer in renderers.items():
        add(f"{family} VAE round trip", lambda: geneval.run(vae_round_trip(renderer.pipeline.vae, truth.images)))
    pixart = renderers["pixart"]
    add("pixart teacher", lambda: model_geneval(pixart, geneval, seed))
    teacher = pixart.pipeline.transformer
    n_layers = len(teacher.transformer_blocks)
    for how, ids in block_choices(n_layers).items():
        pruned, _ = remove_blocks(teacher, ids)
        with pixart.using(pruned):
            add(f"pixart -{len(ids)}/{n_layers} {how} [{','.join(ids)}]", lambda: model_geneval(pixart, geneval, seed))
    add("flux teacher", lambda: model_geneval(renderers["flux"], geneval, seed))
    rows["clip"] = {"ranking_accuracy": clip_ranking(zoo / "clip", truth)}
    return rows


def table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per image source, one column per GenEval task, then overall."""
    lines = ["| images | " + " | ".join(GENEVAL_TASKS) + " | overall |", "|---" * (len(GENEVAL_TASKS) + 2) + "|"]
    for name, r in rows.items():
        if "overall" in r:
            lines.append(f"| {name} | " + " | ".join(f"{r[t]:.3f}" for t in (*GENEVAL_TASKS, "overall")) + " |")
    if "clip" in rows:
        lines.append(f"\nCLIP caption ranking accuracy: {rows['clip']['ranking_accuracy']:.3f}")
    return "\n".join(lines)


def main():
    """Compute the figures, print the table, optionally write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=Path("models/shapes"))
    parser.add_argument("--data", type=Path, default=Path("data/shapes"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    rows = figures(args.zoo, args.data, args.seed, args.threads)
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
