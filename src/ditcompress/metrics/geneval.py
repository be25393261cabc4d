"""GenEval (thesis 2.5.4): the scoring rules of the reference, separate from any detector.

Rules from djghosh13/geneval `evaluation/evaluate_images.py`:
- per class keep detections with score > 0.3 (> 0.9 for "counting" prompts), highest first, at
  most 16 per class, then greedy NMS at IoU 1.0 (i.e. none, the reference default);
- `include` clauses AND-ed (at least `count` objects of the class; with `color`, at least `count`
  of the first `count` objects classified as that colour; with `position`, every one of them in
  relation to every object of the target clause), `exclude` clauses OR-ed (fewer than `count`);
- relative position: centre offset shrunk by 0.1 x (sum of the box sizes) per axis, a relation
  holds when its component of the normalised offset exceeds 0.5;
- colour: CLIP zero-shot over 10 colours on the masked box crop (see `color.py`), unless the
  detector knows the colour exactly (the shapes detector).
Summary from `evaluation/summary_scores.py`: a task's score is the fraction of its images
judged correct; overall = mean of the task scores.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ditcompress.metrics.base import Evaluator, MetricsError, as_image_list, check_count, resolve_device
from ditcompress.metrics.cache import EmbeddingCache, default_cache
from ditcompress.metrics.config import GENEVAL_IMAGES_PER_PROMPT, GENEVAL_METADATA, GenEvalRules
from ditcompress.metrics.detection import Detection, Detector
from ditcompress.metrics.position import relative_position

GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
GENEVAL_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")

# (image, detections of one class, class name) -> one colour name per detection
ColorClassifier = Callable[[np.ndarray, list[Detection], str], list[str]]


def compute_iou(box_a, box_b) -> float:
    """IoU with the reference's inclusive-pixel (+1) box areas."""
    area = lambda b: max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)  # noqa: E731
    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def select_objects(detections: Sequence[Detection], tag: str, rules: GenEvalRules = GenEvalRules()
                   ) -> dict[str, list[Detection]]:
    """Detections kept per class: above the task's threshold, most confident first, capped, NMS."""
    threshold = rules.counting_threshold if tag == "counting" else rules.threshold
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        by_class.setdefault(det.label, []).append(det)
    kept = {}
    for label, dets in by_class.items():
        order = sorted((d for d in dets if d.score > threshold), key=lambda d: -d.score)[:rules.max_objects]
        chosen = []
        while order:
            best = order.pop(0)
            chosen.append(best)
            if rules.nms_threshold < 1:
                order = [d for d in order if compute_iou(best.box, d.box) < rules.nms_threshold]
        if chosen:
            kept[label] = chosen
    return kept


def _colors(image, dets: list[Detection], classname: str, classifier: ColorClassifier | None) -> list[str]:
    """Exact colours from the detector when all are known, else the CLIP zero-shot classifier."""
    if all(d.color is not None for d in dets):
        return [d.color for d in dets]  # type: ignore[misc]
    if classifier is None or image is None:
        raise MetricsError("geneval: detections carry no colour and no colour classifier is set (geneval.color_clip)")
    return list(classifier(image, dets, classname))


def evaluate_image(objects: dict[str, list[Detection]], metadata: dict, *, image: np.ndarray | None = None,
                   color_classifier: ColorClassifier | None = None, rules: GenEvalRules = GenEvalRules()
                   ) -> tuple[bool, str]:
    """(correct, reason) for one image's kept objects against its prompt metadata (reference `evaluate`)."""
    correct, reasons, groups = True, [], []
    for req in metadata.get("include", []):
        classname, count = req["class"], req["count"]
        found = objects.get(classname, [])[:count]
        matched = True
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {classname}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = _colors(image, found, classname, color_classifier)
                if colors.count(req["color"]) < count:
                    correct = matched = False
                    reasons.append(f"expected {req['color']} {classname}>={count}, found {colors.count(req['color'])}")
            if "position" in req and matched:
                relation, target = req["position"]
                if groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {classname} to be {relation}")
                else:
                    for obj in found:
                        for other in groups[target]:
                            if relation not in relative_position(obj.box, other.box, rules.position_threshold):
                                correct = matched = False
                                reasons.append(f"expected {classname} {relation} target")
                                break
                        if not matched:
                            break
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        n = len(objects.get(req["class"], []))
        if n >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return correct, "\n".join(reasons)


def geneval_results(items: Sequence[dict], detections_per_image: Sequence[Sequence[Detection]], *,
                    images=None, color_classifier: ColorClassifier | None = None,
                    rules: GenEvalRules = GenEvalRules()) -> list[dict]:
    """Per-image verdicts {tag, prompt, correct, reason} (the reference's results.jsonl rows)."""
    if len(items) != len(detections_per_image):
        raise MetricsError(f"geneval: {len(detections_per_image)} detection lists for {len(items)} items")
    images = as_image_list(images) if images is not None else [None] * len(items)
    rows = []
    for meta, dets, image in zip(items, detections_per_image, images):
        ok, reason = evaluate_image(select_objects(dets, meta["tag"], rules), meta, image=image,
                                    color_classifier=color_classifier, rules=rules)
        rows.append({"tag": meta["tag"], "prompt": meta["prompt"], "correct": ok, "reason": reason,
                     "metadata": json.dumps(meta, sort_keys=True)})
    return rows


def geneval_summary(rows: Sequence[dict]) -> dict[str, float]:
    """Task accuracies, their mean ("overall"), and the fractions of correct images and prompts."""
    by_tag: dict[str, list[bool]] = {}
    by_prompt: dict[str, list[bool]] = {}
    for r in rows:
        by_tag.setdefault(r["tag"], []).append(r["correct"])
        by_prompt.setdefault(r["metadata"], []).append(r["correct"])
    out = {tag: float(np.mean(v)) for tag, v in by_tag.items()}
    out["overall"] = float(np.mean(list(out.values())))
    out["correct_images"] = float(np.mean([r["correct"] for r in rows]))
    out["correct_prompts"] = float(np.mean([any(v) for v in by_prompt.values()]))
    return out


def geneval_score(items: Sequence[dict], detections_per_image: Sequence[Sequence[Detection]], *,
                  images=None, color_classifier: ColorClassifier | None = None,
                  rules: GenEvalRules = GenEvalRules()) -> dict[str, float]:
    """GenEval summary for images (one metadata item and one detection list per image)."""
    return geneval_summary(geneval_results(items, detections_per_image, images=images,
                                           color_classifier=color_classifier, rules=rules))


def load_geneval_metadata(path: str | Path) -> list[dict]:
    """Prompt metadata from a GenEval `evaluation_metadata.jsonl` (one JSON object per line)."""
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"{path}: GenEval metadata file not found (geneval.metadata)")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            meta = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MetricsError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(meta, dict) or not {"tag", "prompt", "include"} <= meta.keys():
            raise MetricsError(f"{path}:{n}: expected an object with 'tag', 'prompt' and 'include'")
        if meta["tag"] not in GENEVAL_TASKS:
            raise MetricsError(f"{path}:{n}: unknown tag {meta['tag']!r} (known: {', '.join(GENEVAL_TASKS)})")
        clauses = meta["include"] + meta.get("exclude", [])
        if not all(isinstance(c, dict) and {"class", "count"} <= c.keys() for c in clauses):
            raise MetricsError(f"{path}:{n}: every include/exclude clause needs 'class' and 'count'")
        items.append(meta)
    if not items:
        raise MetricsError(f"{path}: no prompts in GenEval metadata")
    return items


def load_detector(spec: str, path: str | None = None, device: str = "auto") -> Detector:
    """"shapes" (exact shapes-world detector), "mask2former" (transformers), or "package.module:Class"."""
    if spec == "shapes":
        from ditcompress.shapes.detector import ShapesDetector

        return ShapesDetector()
    if spec == "mask2former":
        from ditcompress.metrics.mask2former import Mask2FormerDetector

        if path is None:
            raise MetricsError("geneval.detector_path: required for the mask2former detector")
        return Mask2FormerDetector(path, device=device)
    module, _, cls = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, ValueError):
        raise MetricsError(f"geneval.detector: unknown detector {spec!r} "
                           "(shapes, mask2former or package.module:Class)") from None
    return factory(path) if path is not None else factory()


class GenEvalEvaluator(Evaluator):
    """GenEval benchmark: detector -> kept objects -> rule checks -> task accuracies."""

    name = "geneval"
    benchmark = "geneval"

    def __init__(self, metadata: str = GENEVAL_METADATA, *, images_per_prompt: int = GENEVAL_IMAGES_PER_PROMPT,
                 detector: str | Detector = "shapes", detector_path: str | None = None,
                 color_clip: str | None = None, rules: GenEvalRules = GenEvalRules(), device: str = "auto",
                 batch_size: int = 32, cache: EmbeddingCache | None = None):
        self.metadata = load_geneval_metadata(metadata)
        self.images_per_prompt, self.rules = images_per_prompt, rules
        self.device, self.batch_size = resolve_device(device), batch_size
        self.cache = cache if cache is not None else default_cache()
        self._detector_spec, self.detector_path, self.color_clip = detector, detector_path, color_clip
        self._detector: Detector | None = detector if not isinstance(detector, str) else None

    def items(self) -> list[dict]:
        """Each prompt's metadata repeated `images_per_prompt` times (prompt-major, as GenEval's folders)."""
        return [meta for meta in self.metadata for _ in range(self.images_per_prompt)]

    @property
    def detector(self) -> Detector:
        """The detector, built on first use."""
        if self._detector is None:
            self._detector = load_detector(self._detector_spec, self.detector_path, str(self.device))
        return self._detector

    def detect(self, images, set_id: str | None) -> list[list[Detection]]:
        """Detections per image, cached per image set."""
        det = self.detector
        key = getattr(det, "id", f"{type(det).__module__}.{type(det).__qualname__}:{self.detector_path}")
        batch = getattr(det, "detect_batch", None)
        images = as_image_list(images)
        if batch is not None:
            run = lambda: [d for i in range(0, len(images), self.batch_size)  # noqa: E731
                           for d in batch(images[i:i + self.batch_size])]
        else:
            run = lambda: [det.detect(im) for im in images]  # noqa: E731
        return self.cache.get_or_compute(f"detector:{key}", set_id, run)

    def run(self, images, prompts=None, items=None, *, reference=None, set_id=None):
        """{"geneval/overall": ..., "geneval/<task>": ..., "geneval/correct_images": ..., ...}."""
        items = items if items is not None else self.items()
        check_count(images, len(items), "geneval")
        classifier = None
        if self.color_clip is not None:
            from ditcompress.metrics.clip import load_clip
            from ditcompress.metrics.color import ClipColorClassifier

            classifier = ClipColorClassifier(load_clip(self.color_clip, self.device), batch_size=self.batch_size)
        scores = geneval_score(items, self.detect(images, set_id), images=images, color_classifier=classifier,
                               rules=self.rules)
        return {f"geneval/{k}": v for k, v in scores.items()}
