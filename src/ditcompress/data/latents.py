"""Training batches in a pipeline's latent space: images through its VAE, prompts through its text
encoders (each encoded once; they are frozen), for the stages that train a transformer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ditcompress.models.base import Conditioning


@torch.no_grad()
def encode_images(vae, images: np.ndarray) -> torch.Tensor:
    """Latents `(N, C, h, w)` the pipeline's transformer works on: (mode − shift) · scale.

    `images` are uint8 `(N, H, W, 3)`; the pipelines undo the same scaling before decoding.
    """
    p = next(vae.parameters())
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(p.device, p.dtype) / 127.5 - 1
    modes = vae.encode(pixels).latent_dist.mode()
    return (modes - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor


def teacher_batches(renderer, data_dir: str | Path, batch_size: int, seed: int
                    ) -> Iterator[tuple[torch.Tensor, Conditioning]]:
    """Endless shuffled `(latents, conditioning)` batches of the generate stage's dataset.

    The order is a seeded permutation per epoch, so a run sees the same batches every time.
    """
    from ditcompress.data.dataset import TeacherDataset

    data = TeacherDataset(data_dir)
    g = torch.Generator().manual_seed(seed)
    device = renderer.pipeline.transformer.device
    while True:
        order = torch.randperm(len(data), generator=g).tolist()
        for s in range(0, len(order) - batch_size + 1, batch_size):
            items = [data[i] for i in order[s : s + batch_size]]
            images = np.stack([np.asarray(it["image"].convert("RGB")) for it in items])
            latents = encode_images(renderer.pipeline.vae, images)
            yield latents.to(device), renderer.encode([it["prompt"] for it in items]).to(device)
