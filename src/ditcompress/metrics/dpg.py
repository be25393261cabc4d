"""DPG-Bench (thesis 2.5.5): hierarchical yes/no questions per dense prompt, answered by a VQA model.

Scoring from TencentQQGYLab/ELLA `dpg_bench/compute_dpg_bench.py`:
- a question scores 1 when the VQA answer is "yes", else 0;
- questions are visited in file order and a question is zeroed when any of its parents
  (`dependency`, 0 = no parent) currently scores 0, so a failed parent zeroes the subtree;
- an image's score is the mean over its prompt's questions, a prompt's score the mean over its
  images (the reference's four crops of a 2x2 grid = four images per prompt here);
- DPG-Bench score = 100 x mean over prompts.
Category breakdown: 100 x mean of the (hierarchy-applied) question scores per `category_broad`
(entity, attribute, relation, global, other).

Questions come from a CSV with the real DPG-Bench columns; an optional `check` column holds a
machine-checkable form of the question (JSON) that the shapes-world VQA backend answers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ditcompress.metrics.base import Evaluator, MetricsError, as_image_list, check_count, resolve_device
from ditcompress.metrics.cache import EmbeddingCache, default_cache
from ditcompress.metrics.config import DPG_QUESTIONS

DPG_COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
               "category_detailed", "tuple", "question_natural_language")


@dataclass(frozen=True)
class DPGQuestion:
    """One question (proposition) of a prompt's question graph."""

    item_id: str
    proposition_id: int
    dependency: tuple[int, ...]  # parent proposition ids; 0 = root
    question: str
    category_broad: str = ""
    category_detailed: str = ""
    tuple: str = ""
    check: dict | None = None


@dataclass(frozen=True)
class DPGPrompt:
    """A dense prompt with its questions in file order."""

    item_id: str
    text: str
    questions: tuple[DPGQuestion, ...]


def _ints(value: str, where: str, key: str) -> tuple[int, ...]:
    """"1, 2" -> (1, 2), as the reference parses `dependency`."""
    try:
        return tuple(int(v.strip()) for v in str(value).split(","))
    except ValueError:
        raise MetricsError(f"{where}: {key}: expected integers (got {value!r})") from None


def load_dpg_questions(path: str | Path) -> list[DPGPrompt]:
    """Prompts and their questions from a DPG-Bench CSV, prompts in first-appearance order."""
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"{path}: DPG-Bench question file not found (dpg.questions)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in DPG_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise MetricsError(f"{path}: not a DPG-Bench question CSV (missing columns: {', '.join(missing)})")
        texts: dict[str, str] = {}
        questions: dict[str, list[DPGQuestion]] = {}
        for n, row in enumerate(reader, 2):  # line 1 is the header
            where = f"{path}:{n}"
            (qid,) = _ints(row["proposition_id"], where, "proposition_id")
            check = None
            if row.get("check"):
                try:
                    check = json.loads(row["check"])
                except json.JSONDecodeError as exc:
                    raise MetricsError(f"{where}: check: not valid JSON ({exc.msg})") from None
            item = row["item_id"]
            texts.setdefault(item, row["text"])
            q = DPGQuestion(item, qid, _ints(row["dependency"], where, "dependency"), row["question_natural_language"],
                            row["category_broad"], row["category_detailed"], row["tuple"], check)
            if any(o.proposition_id == qid for o in questions.get(item, [])):
                raise MetricsError(f"{where}: duplicate proposition_id {qid} for item {item!r}")
            questions.setdefault(item, []).append(q)
    if not texts:
        raise MetricsError(f"{path}: no questions in DPG-Bench CSV")
    return [DPGPrompt(item, texts[item], tuple(qs)) for item, qs in questions.items()]


def _is_yes(answer) -> bool:
    """A VQA answer counts when it is True or the string "yes" (reference: `answer == 'yes'`)."""
    return answer is True or (isinstance(answer, str) and answer.strip().lower() == "yes")


def apply_hierarchy(questions: Sequence[DPGQuestion], answers: Mapping[int, object]) -> dict[int, float]:
    """Question scores after zeroing every question with a parent scored 0 (file order, as the reference)."""
    scores = {}
    for q in questions:
        if q.proposition_id not in answers:
            raise MetricsError(f"dpg: no answer for item {q.item_id!r} question {q.proposition_id}")
        scores[q.proposition_id] = float(_is_yes(answers[q.proposition_id]))
    for q in questions:
        for parent in q.dependency:
            if parent == 0:
                continue
            if parent not in scores:
                raise MetricsError(f"dpg: item {q.item_id!r} question {q.proposition_id} depends on unknown {parent}")
            if scores[parent] == 0:
                scores[q.proposition_id] = 0.0
                break
    return scores


def dpg_score(prompts: Sequence[DPGPrompt], answers: Mapping[str, Sequence[Mapping[int, object]]]) -> dict[str, float]:
    """DPG-Bench score ("overall") and per-category scores, all x100.

    `answers[item_id]` holds one {proposition_id: answer} mapping per image of that prompt.
    """
    prompt_scores, by_category = [], {}
    for p in prompts:
        per_image = answers.get(p.item_id)
        if not per_image:
            raise MetricsError(f"dpg: no answers for item {p.item_id!r}")
        image_scores = []
        for ans in per_image:
            scores = apply_hierarchy(p.questions, ans)
            image_scores.append(np.mean(list(scores.values())))
            for q in p.questions:
                by_category.setdefault(q.category_broad or "uncategorised", []).append(scores[q.proposition_id])
        prompt_scores.append(np.mean(image_scores))
    out = {"overall": 100.0 * float(np.mean(prompt_scores))}
    out.update({c: 100.0 * float(np.mean(v)) for c, v in sorted(by_category.items())})
    return out


class DPGEvaluator(Evaluator):
    """DPG-Bench with a pluggable VQA backend ("shapes": answers from the shapes detector)."""

    name = "dpg"
    benchmark = "dpg"

    def __init__(self, questions: str = DPG_QUESTIONS, *, images_per_prompt: int = 1,
                 vqa="shapes", device: str = "auto", batch_size: int = 32, cache: EmbeddingCache | None = None):
        self.prompts = load_dpg_questions(questions)
        self._by_id = {p.item_id: p for p in self.prompts}
        self.images_per_prompt, self.device = images_per_prompt, resolve_device(device)
        self.cache = cache if cache is not None else default_cache()
        self._vqa_spec, self._vqa = vqa, (vqa if not isinstance(vqa, str) else None)

    def items(self) -> list[dict]:
        """{"item_id", "prompt"} per image, each prompt repeated `images_per_prompt` times."""
        return [{"item_id": p.item_id, "prompt": p.text} for p in self.prompts for _ in range(self.images_per_prompt)]

    @property
    def vqa(self):
        """The VQA backend, built on first use."""
        if self._vqa is None:
            from ditcompress.metrics.vqa import load_vqa

            self._vqa = load_vqa(self._vqa_spec, str(self.device))
        return self._vqa

    def run(self, images, prompts=None, items=None, *, reference=None, set_id=None):
        """{"dpg/overall": ..., "dpg/<category>": ...}."""
        items = items if items is not None else self.items()
        check_count(images, len(items), "dpg")
        vqa, images = self.vqa, as_image_list(images)
        for it in items:
            if it["item_id"] not in self._by_id:
                raise MetricsError(f"dpg: item {it['item_id']!r} is not in the question file")

        def answer_all() -> list[list[bool]]:
            """Yes/no per question of each image's prompt."""
            return [vqa.answer(im, self._by_id[it["item_id"]].questions) for im, it in zip(images, items)]

        answered = self.cache.get_or_compute(f"vqa:{getattr(vqa, 'id', type(vqa).__name__)}", set_id, answer_all)
        answers: dict[str, list[dict[int, bool]]] = {}
        for it, ans in zip(items, answered):
            qs = self._by_id[it["item_id"]].questions
            answers.setdefault(it["item_id"], []).append({q.proposition_id: a for q, a in zip(qs, ans)})
        asked = [self._by_id[i] for i in answers]
        return {f"dpg/{k}": v for k, v in dpg_score(asked, answers).items()}
