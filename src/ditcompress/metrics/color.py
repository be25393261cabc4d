"""GenEval's colour classifier: CLIP zero-shot over 10 colours on masked object crops.

From djghosh13/geneval `evaluate_images.py` (`ImageCrops`, `color_classification`): the object's
mask is composited onto a grey (#999) background, cropped to its box, and classified with
CLIP against three prompt templates per colour, averaged as clip_benchmark's
`zero_shot_classifier` does. The reference CLIP is OpenAI ViT-L/14 (open_clip "openai"), the
same weights as transformers `openai/clip-vit-large-patch14` with the same eval transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ditcompress.metrics.detection import Detection
from ditcompress.metrics.geneval import GENEVAL_COLORS

BACKGROUND = (153, 153, 153)  # "#999", the reference's default bgcolor


def masked_crop(image: np.ndarray, det: Detection, background=BACKGROUND) -> np.ndarray:
    """The detection's pixels on a grey background, cropped to its box (PIL rounds the box)."""
    if det.mask is not None:
        if det.mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {det.mask.shape} differs from image shape {image.shape[:2]}")
        image = np.where(det.mask[..., None].astype(bool), image, np.asarray(background, np.uint8))
    return np.asarray(Image.fromarray(image).crop(tuple(det.box[:4])))


class ClipColorClassifier:
    """Callable (image, detections, class name) -> colour names, with per-class text classifiers cached."""

    def __init__(self, clip, colors: Sequence[str] = GENEVAL_COLORS, batch_size: int = 16):
        self.clip, self.colors, self.batch_size = clip, tuple(colors), batch_size
        self._weights: dict[str, np.ndarray] = {}

    def text_weights(self, classname: str) -> np.ndarray:
        """(D, n_colours): per colour the renormalised mean of three template embeddings."""
        if classname not in self._weights:
            templates = (f"a photo of a {{c}} {classname}", f"a photo of a {{c}}-colored {classname}",
                         "a photo of a {c} object")
            cols = []
            for c in self.colors:
                emb = self.clip.embed_texts([t.format(c=c) for t in templates]).mean(0)
                cols.append(emb / np.linalg.norm(emb))
            self._weights[classname] = np.stack(cols, axis=1)
        return self._weights[classname]

    def __call__(self, image: np.ndarray, detections: list[Detection], classname: str) -> list[str]:
        """Colour name of each detection."""
        if not detections:
            return []
        crops = [masked_crop(image, d) for d in detections]
        emb = self.clip.embed_images(crops, "processor", self.batch_size)  # (n, D), normalised
        logits = 100.0 * emb @ self.text_weights(classname)
        return [self.colors[i] for i in logits.argmax(1)]
