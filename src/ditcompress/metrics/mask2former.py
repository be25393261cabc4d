"""A GenEval detector for real images: COCO instance segmentation with transformers Mask2Former.

Not weight-identical to the official GenEval detector (mmdet `mask2former_swin-s-p4-w7-224_lsj_
8x2_50e_coco`): use a transformers COCO-instance checkpoint (e.g.
`facebook/mask2former-swin-small-coco-instance`) from a local path. The post-processing follows
mmdet's `Mask2FormerFusionHead.instance_postprocess` rather than transformers'
`post_process_instance_segmentation`: mask logits upsampled bilinearly to the padded input,
cropped to the valid region and upsampled to the image; top-100 (query, class) pairs; score =
class probability x mean mask probability inside the mask; box = the mask's extent. Labels are
the checkpoint's `id2label` names (COCO's, as GenEval's `object_names.txt`). The
official detector stays pluggable: any class with `detect(image) -> list[Detection]`
(`geneval.detector: package.module:Class`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ditcompress.metrics.base import MetricsError, as_image_list, resolve_device
from ditcompress.metrics.detection import Detection


def mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) extents of boolean masks `(N, H, W)`, exclusive max as mmdet `mask2bbox`."""
    boxes = torch.zeros((len(masks), 4), dtype=torch.float32)
    xs, ys = masks.any(1), masks.any(2)  # (N, W), (N, H)
    for i in range(len(masks)):
        x, y = torch.where(xs[i])[0], torch.where(ys[i])[0]
        if len(x) and len(y):
            boxes[i] = torch.tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float32)
    return boxes


class Mask2FormerDetector:
    """`Detector` over a transformers `Mask2FormerForUniversalSegmentation` (instance) checkpoint."""

    def __init__(self, path: str | Path, device: str = "auto", max_per_image: int = 100, min_score: float = 0.3):
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

        self.device = resolve_device(device)
        try:
            self.model = Mask2FormerForUniversalSegmentation.from_pretrained(str(path)).eval().to(self.device)
            self.processor = AutoImageProcessor.from_pretrained(str(path))
        except OSError as exc:
            raise MetricsError(f"{path}: cannot load a Mask2Former model ({str(exc).splitlines()[0]})") from None
        id2label = self.model.config.id2label
        self.classes = tuple(id2label[i] for i in range(len(id2label)))
        # masks below GenEval's lowest threshold (0.3) can never count; dropping them keeps memory small
        self.max_per_image, self.min_score = max_per_image, min_score
        self.id = f"mask2former:{Path(path).resolve() if Path(path).exists() else path}:{max_per_image}:{min_score}"

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections of one RGB uint8 image."""
        return self.detect_batch([image])[0]

    @torch.no_grad()
    def detect_batch(self, images) -> list[list[Detection]]:
        """Detections of several images (one forward pass)."""
        images = as_image_list(images)
        inputs = self.processor(images=images, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
        pixel_mask = inputs["pixel_mask"].to(self.device) if "pixel_mask" in inputs else None
        out = self.model(pixel_values=pixels, pixel_mask=pixel_mask)
        pad_h, pad_w = pixels.shape[-2:]
        num_classes = out.class_queries_logits.shape[-1] - 1
        results = []
        for i, image in enumerate(images):
            valid = inputs["pixel_mask"][i] if "pixel_mask" in inputs else torch.ones(pad_h, pad_w)
            valid_h, valid_w = int(valid.any(1).sum()), int(valid.any(0).sum())
            logits = F.interpolate(out.masks_queries_logits[i][None].float(), size=(pad_h, pad_w), mode="bilinear",
                                   align_corners=False)[:, :, :valid_h, :valid_w]
            logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)[0]  # (Q, H, W)
            probs = out.class_queries_logits[i].float().softmax(-1)[:, :-1]  # (Q, C), no-object dropped
            k = min(self.max_per_image, probs.numel())
            cls_scores, flat = probs.flatten().topk(k)
            labels, queries = flat % num_classes, flat // num_classes
            mask_logits = logits[queries]
            binary = mask_logits > 0
            mask_scores = (mask_logits.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
            scores = (cls_scores * mask_scores).cpu()
            keep = torch.where(scores > self.min_score)[0]
            binary = binary[keep].cpu()
            boxes = mask_to_box(binary)
            results.append([
                Detection(label=self.classes[int(labels[j])], score=float(scores[j]),
                          box=tuple(float(v) for v in boxes[n]), mask=binary[n].numpy())
                for n, j in enumerate(keep.tolist())
            ])
        return results
