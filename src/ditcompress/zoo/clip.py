"""The tiny CLIP of the shapes world (`CLIPModel` + `CLIPProcessor`), trained contrastively.

Saved with `save_pretrained`, so torchmetrics' CLIPScore, our CMMD and GenEval code load it from
a local path exactly like `openai/clip-vit-large-patch14-336`. Its text tower doubles as Flux's
CLIP text encoder (the pooled vector), as FLUX.1 uses OpenAI CLIP-L's.

Captions repeat in the training set ("a photo of a circle"), so the contrastive loss treats every
pair with the same caption as a positive (soft targets) instead of as a false negative.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextModel, CLIPTokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ditcompress.utils.logging import get_logger
from ditcompress.zoo.common import Stopwatch, warmup_cosine
from ditcompress.zoo.config import ClipConfig

log = get_logger(__name__)


def build_clip(cfg: ClipConfig, tokenizer: CLIPTokenizer, image_size: int, seed: int) -> CLIPModel:
    """A seeded untrained CLIP: ViT on `image_size` pixels, causal text transformer on word tokens."""
    tower = dict(hidden_size=cfg.width, intermediate_size=4 * cfg.width, num_hidden_layers=cfg.layers,
                 num_attention_heads=cfg.heads, projection_dim=cfg.projection_dim)
    config = CLIPConfig(
        text_config=dict(**tower, vocab_size=len(tokenizer), max_position_embeddings=cfg.max_length,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(**tower, image_size=image_size, patch_size=cfg.patch_size, num_channels=3),
        projection_dim=cfg.projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config)


def build_clip_processor(tokenizer: CLIPTokenizer, image_size: int) -> CLIPProcessor:
    """OpenAI CLIP preprocessing (bicubic resize, centre crop, CLIP mean/std) at `image_size`."""
    images = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BICUBIC, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def clip_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 `(N, H, W, 3)` at the model's size as CLIP input (what the processor computes, in bulk)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


def clip_text_encoder(clip: CLIPModel) -> CLIPTextModel:
    """The text tower as a standalone `CLIPTextModel` (Flux's `text_encoder`), frozen."""
    text = CLIPTextModel(clip.config.text_config)
    text.load_state_dict(clip.text_model.state_dict())  # transformers 5: CLIPModel.text_model is a CLIPTextModel
    return text.eval().requires_grad_(False)


def _embed(clip: CLIPModel, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """L2-normalised image and text embeddings."""
    img = clip.get_image_features(pixel_values=pixels)
    txt = clip.get_text_features(input_ids=ids, attention_mask=mask)
    img, txt = (x if torch.is_tensor(x) else x.pooler_output for x in (img, txt))
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def train_clip(clip: CLIPModel, processor: CLIPProcessor, images: np.ndarray, captions: list[str],
               cfg: ClipConfig, seed: int, tracker=None, device: str | torch.device = "cpu") -> dict:
    """Contrastive training with same-caption positives on `device` (the model ends on the CPU);
    returns timing and the final loss."""
    clip.to(device)
    pixels = clip_pixels(images).to(device)
    unique = sorted(set(captions))
    index = {c: i for i, c in enumerate(unique)}
    cap_id = torch.tensor([index[c] for c in captions], device=device)
    tok = processor.tokenizer(unique, padding="max_length", max_length=cfg.max_length, truncation=True,
                              return_tensors="pt").to(device)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(clip.parameters(), lr=cfg.lr, weight_decay=0.1)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    clip.train()
    clock, running = Stopwatch(), None
    for step in range(cfg.steps):
        idx = torch.randint(len(pixels), (cfg.batch_size,), generator=g)
        c = cap_id[idx]
        img, txt = _embed(clip, pixels[idx], tok.input_ids[c], tok.attention_mask[c])
        logits = clip.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B)
        same = (c[:, None] == c[None, :]).float()
        targets = same / same.sum(1, keepdim=True)  # symmetric: every same-caption pair is positive
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if tracker is not None and (step % 50 == 0 or step == cfg.steps - 1):
            tracker.log_metrics({"clip/loss": running}, step=step)
    clip.cpu().eval()
    log.info("clip: %d steps in %.0f s (%.2f steps/s), loss %.3f", cfg.steps, clock.seconds,
             clock.rate(cfg.steps), running)
    return {"loss": running, "seconds": clock.seconds, "steps_per_s": clock.rate(cfg.steps)}


@torch.no_grad()
def caption_ranking_accuracy(clip: CLIPModel, processor: CLIPProcessor, images: np.ndarray,
                             captions: list[str], mismatched: np.ndarray) -> float:
    """Fraction of (image, wrong caption) pairs where the image's own caption scores higher.

    `mismatched[i, j]` is True when caption j does not describe image i.
    """
    unique = sorted(set(captions))
    tok = processor.tokenizer(unique, padding=True, return_tensors="pt")
    img, txt = _embed(clip.eval(), clip_pixels(images), tok.input_ids, tok.attention_mask)
    sim = (img @ txt.T).numpy()  # (N, U)
    col = np.array([unique.index(c) for c in captions])
    own = sim[np.arange(len(captions)), col]  # (N,)
    other = sim[:, col]  # (N, N): image i against the caption of image j
    return float((own[:, None] > other)[mismatched].mean())
