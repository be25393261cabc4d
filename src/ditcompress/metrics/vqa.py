"""VQA backends for DPG-Bench: `answer(image, questions) -> list[bool]`.

- `DetectorVQA` (the shapes world): answers each question's structured `check` from a
  detector's output with GenEval's rules (confidence threshold, relative-position margin):
  exists = any instance, count = exactly n, color / position = every instance agrees.
- `TransformersVQA` (real images): a transformers visual-question-answering model from a local
  path, generative (BLIP, BLIP-2) or classifier (ViLT). DPG-Bench's reference VQA model is
  mPLUG-large (modelscope), which transformers does not ship; numbers differ accordingly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ditcompress.metrics.base import MetricsError, resolve_device
from ditcompress.metrics.detection import Detection, Detector
from ditcompress.metrics.dpg import DPGQuestion


class DetectorVQA:
    """Answers {"type": exists|color|count|position, ...} checks from detections of the image."""

    def __init__(self, detector: Detector, threshold: float = 0.3, position_threshold: float = 0.1):
        self.detector, self.threshold, self.position_threshold = detector, threshold, position_threshold
        det_id = getattr(detector, "id", type(detector).__qualname__)
        self.id = f"detector-vqa:{det_id}:{threshold}:{position_threshold}"

    def answer(self, image: np.ndarray, questions: Sequence[DPGQuestion]) -> list[bool]:
        """One yes/no per question."""
        dets = [d for d in self.detector.detect(image) if d.score > self.threshold]
        return [self.check(q, dets) for q in questions]

    def check(self, q: DPGQuestion, dets: list[Detection]) -> bool:
        """Evaluate one question's `check` against the detections."""
        c = q.check
        if not c or "type" not in c:
            raise MetricsError(f"dpg: item {q.item_id!r} question {q.proposition_id} has no 'check' "
                               "(the detector VQA backend answers only checkable questions)")
        from ditcompress.shapes.truth import answer_check

        try:
            # "Are the circles red?" / "Is the circle left of the square?": every instance must
            # agree; the same rule answers the question file from a scene's true objects
            return answer_check(c, dets, self.position_threshold)
        except KeyError as exc:
            raise MetricsError(f"dpg: item {q.item_id!r} question {q.proposition_id}: check misses {exc}") from None
        except ValueError:
            raise MetricsError(f"dpg: item {q.item_id!r} question {q.proposition_id}: "
                               f"unknown check type {c['type']!r}") from None


class TransformersVQA:
    """A transformers `AutoModelForVisualQuestionAnswering` checkpoint answering yes/no questions."""

    def __init__(self, path: str | Path, device: str = "auto", max_new_tokens: int = 5):
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

        self.device, self.max_new_tokens = resolve_device(device), max_new_tokens
        try:
            self.model = AutoModelForVisualQuestionAnswering.from_pretrained(str(path)).eval().to(self.device)
            self.processor = AutoProcessor.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise MetricsError(f"{path}: cannot load a VQA model ({str(exc).splitlines()[0]})") from None
        self.id = f"hf-vqa:{Path(path).resolve() if Path(path).exists() else path}"

    @torch.no_grad()
    def answer_texts(self, image: np.ndarray, questions: Sequence[str]) -> list[str]:
        """The model's answer string to each question about one image."""
        inputs = self.processor(images=[image] * len(questions), text=list(questions), return_tensors="pt",
                                padding=True).to(self.device)
        if self.model.can_generate():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]
        labels = self.model(**inputs).logits.argmax(-1).tolist()
        return [self.model.config.id2label[i] for i in labels]

    def answer(self, image: np.ndarray, questions: Sequence[DPGQuestion]) -> list[bool]:
        """One yes/no per question (yes iff the answer is "yes")."""
        return [a.strip().lower() == "yes" for a in self.answer_texts(image, [q.question for q in questions])]


def load_vqa(spec: str, device: str = "auto"):
    """"shapes" -> `DetectorVQA` over the shapes detector; anything else: a transformers VQA model path."""
    if spec == "shapes":
        from ditcompress.shapes.detector import ShapesDetector

        return DetectorVQA(ShapesDetector())
    return TransformersVQA(spec, device)
