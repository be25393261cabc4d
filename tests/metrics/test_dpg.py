"""DPG-Bench: hierarchical question scoring, the question CSV, and the detector-backed VQA."""

import csv
import json

import numpy as np
import pytest

from ditcompress.metrics import (Detection, DPGPrompt, DPGQuestion, MetricsError, apply_hierarchy, dpg_score,
                                 get_evaluator, load_dpg_questions)
from ditcompress.metrics.dpg import DPG_COLUMNS
from ditcompress.metrics.vqa import DetectorVQA


def q(item, qid, deps=(0,), category="entity", check=None):
    """A question with a placeholder text."""
    return DPGQuestion(item, qid, tuple(deps), f"question {qid}?", category, "", "", check)


def test_failed_parent_zeroes_its_subtree():
    qs = [q("a", 1), q("a", 2, [1], "attribute"), q("a", 3, [2], "attribute"), q("a", 4, [1, 5], "relation"),
          q("a", 5)]
    scores = apply_hierarchy(qs, {1: "no", 2: "yes", 3: "yes", 4: "yes", 5: "yes"})
    assert scores == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 1.0}  # 3 falls with its grandparent 1
    scores = apply_hierarchy(qs, {1: True, 2: True, 3: True, 4: True, 5: False})
    assert scores == {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.0, 5: 0.0}  # 4 needs both parents
    assert apply_hierarchy(qs, {1: "Yes ", 2: "no", 3: "yes", 4: "yes", 5: "yes"})[3] == 0.0


def test_score_is_mean_over_prompts_of_question_means_times_100():
    a = DPGPrompt("a", "prompt a", (q("a", 1), q("a", 2, [1], "attribute")))
    b = DPGPrompt("b", "prompt b", (q("b", 1), q("b", 2), q("b", 3, [2], "relation"), q("b", 4, [2], "attribute")))
    answers = {
        "a": [{1: "yes", 2: "yes"}, {1: "no", 2: "yes"}],  # images: 1.0 and 0.0 (child zeroed) -> 0.5
        "b": [{1: "yes", 2: "no", 3: "yes", 4: "yes"}],  # 1/4
    }
    out = dpg_score([a, b], answers)
    assert out["overall"] == pytest.approx(100 * (0.5 + 0.25) / 2)
    # per category: all (image, question) scores of that category
    assert out["entity"] == pytest.approx(100 * np.mean([1, 0, 1, 0]))
    assert out["attribute"] == pytest.approx(100 * np.mean([1, 0, 0]))
    assert out["relation"] == 0.0
    with pytest.raises(MetricsError, match="no answers for item 'b'"):
        dpg_score([a, b], {"a": answers["a"]})


def write_csv(path, rows, columns=DPG_COLUMNS + ("check",)):
    """A question CSV with the given columns (missing values empty)."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})


def row(item, qid, dep, category, check, text=None):
    """One CSV row of the real DPG-Bench columns plus `check`."""
    return {"item_id": item, "text": text or f"prompt {item}", "proposition_id": qid, "dependency": dep,
            "category_broad": category, "question_natural_language": f"q{qid}?", "check": json.dumps(check),
            "tuple": f"{category} - x (y)"}


def test_question_csv_round_trip_and_errors(tmp_path):
    path = tmp_path / "dpg_questions.csv"
    write_csv(path, [row("s1", 1, "0", "entity", {"type": "exists", "class": "circle"}),
                     row("s1", 2, "1", "attribute", {"type": "color", "class": "circle", "color": "red"}),
                     row("s2", 1, "0", "entity", {"type": "exists", "class": "square"}),
                     row("s1", 3, "1,2", "other", {"type": "count", "class": "circle", "count": 2})])
    prompts = load_dpg_questions(path)
    assert [p.item_id for p in prompts] == ["s1", "s2"] and prompts[0].text == "prompt s1"
    assert [x.dependency for x in prompts[0].questions] == [(0,), (1,), (1, 2)]
    assert prompts[0].questions[1].check == {"type": "color", "class": "circle", "color": "red"}
    with pytest.raises(MetricsError, match="nope.csv: DPG-Bench question file not found"):
        load_dpg_questions(tmp_path / "nope.csv")
    write_csv(path, [row("s1", 1, "0", "entity", {})], columns=("item_id", "text", "question_natural_language"))
    with pytest.raises(MetricsError, match=r"dpg_questions.csv: not a DPG-Bench question CSV \(missing columns: "
                                           r"keywords, proposition_id") as err:
        load_dpg_questions(path)
    assert "\n" not in str(err.value)
    write_csv(path, [row("s1", 1, "zero", "entity", {})])
    with pytest.raises(MetricsError, match=r"dpg_questions.csv:2: dependency: expected integers"):
        load_dpg_questions(path)


class ShapesLikeDetector:
    """Exact detector: image pixel (0, 0) selects one of two scenes."""

    classes = ("circle", "square")
    scenes = {
        0: [Detection("circle", 1.0, (0, 0, 10, 10), color="red"),
            Detection("circle", 1.0, (0, 20, 10, 30), color="red"),
            Detection("square", 1.0, (30, 0, 40, 10), color="blue")],
        1: [Detection("square", 1.0, (0, 0, 10, 10), color="blue"), Detection("circle", 0.2, (30, 0, 40, 10))],
    }

    def detect(self, image):
        """The scene chosen by the image's first pixel."""
        return self.scenes[int(image[0, 0, 0])]


def test_detector_vqa_answers_checks():
    vqa = DetectorVQA(ShapesLikeDetector())
    checks = [{"type": "exists", "class": "circle"}, {"type": "color", "class": "circle", "color": "red"},
              {"type": "count", "class": "circle", "count": 2},
              {"type": "position", "a": "circle", "relation": "left of", "b": "square"},
              {"type": "position", "a": "square", "relation": "left of", "b": "circle"}]
    qs = [q("x", i + 1, check=c) for i, c in enumerate(checks)]
    scene0, scene1 = np.zeros((1, 1, 3), np.uint8), np.ones((1, 1, 3), np.uint8)
    assert vqa.answer(scene0, qs) == [True, True, True, True, False]
    assert vqa.answer(scene1, qs) == [False, False, False, False, False]  # the 0.2 circle is below threshold
    # colour and position hold for every instance ("Are the circles red?")
    mixed = [Detection("circle", 1.0, (0, 0, 10, 10), color="red"),
             Detection("circle", 1.0, (50, 0, 60, 10), color="blue"),
             Detection("square", 1.0, (30, 0, 40, 10), color="blue")]
    assert [vqa.check(x, mixed) for x in qs] == [True, False, True, False, False]
    with pytest.raises(MetricsError, match="has no 'check'"):
        vqa.answer(scene0, [q("x", 9)])


def test_dpg_evaluator_end_to_end(tmp_path):
    path = tmp_path / "dpg_questions.csv"
    write_csv(path, [row("s1", 1, "0", "entity", {"type": "exists", "class": "circle"}),
                     row("s1", 2, "1", "attribute", {"type": "color", "class": "circle", "color": "red"}),
                     row("s2", 1, "0", "entity", {"type": "exists", "class": "square"}),
                     row("s2", 2, "1", "relation",
                         {"type": "position", "a": "square", "relation": "right of", "b": "circle"})])
    ev = get_evaluator("dpg", questions=str(path), images_per_prompt=2, vqa=DetectorVQA(ShapesLikeDetector()))
    assert [it["item_id"] for it in ev.items()] == ["s1", "s1", "s2", "s2"]
    images = np.zeros((4, 4, 4, 3), np.uint8)
    images[[1, 3], 0, 0, 0] = 1  # s1: scene0 (1.0), scene1 (0.0); s2: scene0 (1.0), scene1 (0.5)
    out = ev.run(images)
    assert out["dpg/overall"] == pytest.approx(100 * (0.5 + 0.75) / 2)
    assert out["dpg/relation"] == pytest.approx(50.0)
    with pytest.raises(MetricsError, match="dpg: got 3 images for 4 prompts"):
        ev.run(images[:3])


def test_transformers_vqa_on_tiny_vilt(tiny_vilt_dir, tmp_path):
    import torch
    from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

    from ditcompress.metrics.vqa import TransformersVQA

    vqa = TransformersVQA(tiny_vilt_dir, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    questions = [DPGQuestion("x", 1, (0,), "is there a circle?"), DPGQuestion("x", 2, (1,), "are there squares?")]
    model = AutoModelForVisualQuestionAnswering.from_pretrained(tiny_vilt_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_vilt_dir)
    with torch.no_grad():
        logits = model(**processor(images=[image] * 2, text=[x.question for x in questions], return_tensors="pt",
                                   padding=True)).logits
    expected = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    assert vqa.answer_texts(image, [x.question for x in questions]) == expected
    assert vqa.answer(image, questions) == [a == "yes" for a in expected]
    # the evaluator takes a model path as its VQA backend
    path = tmp_path / "dpg_questions.csv"
    write_csv(path, [row("s1", 1, "0", "entity", {}), row("s1", 2, "1", "attribute", {})])
    out = get_evaluator("dpg", questions=str(path), vqa=tiny_vilt_dir, device="cpu").run(image[None])
    assert 0.0 <= out["dpg/overall"] <= 100.0
