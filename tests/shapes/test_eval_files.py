"""The GenEval prompt file and the DPG question file: real formats, consistent with ground truth."""

import collections
import csv

import numpy as np

from ditcompress.metrics.dpg import load_dpg_questions
from ditcompress.metrics.geneval import geneval_score, load_geneval_metadata
from ditcompress.metrics.geneval import relative_position as scorer_relative_position
from ditcompress.shapes import prompts
from ditcompress.shapes.dataset import geneval_prompts, load_split, read_geneval_metadata
from ditcompress.shapes.detector import ShapesDetector
from ditcompress.shapes.dpg import DPG_COLUMNS, propositions, read_dpg_questions
from ditcompress.shapes.truth import answer_check, relative_position, scene_satisfies
from ditcompress.shapes.vocab import COUNTS, RELATIONS


def test_geneval_file_round_trips_with_prompts_per_task_lines_per_tag(built, small_cfg):
    out, stats = built
    items = read_geneval_metadata(out / "eval/geneval_metadata.jsonl")
    assert items == geneval_prompts(small_cfg, 0) == load_geneval_metadata(out / "eval/geneval_metadata.jsonl")
    assert collections.Counter(it["tag"] for it in items) == {tag: 5 for tag in prompts.GENEVAL_TAGS}
    assert stats["geneval_prompts"] == 30
    # only 3 single-object prompts exist for 3 shapes: all of them, then repeated in the same order
    singles = [it["prompt"] for it in items if it["tag"] == "single_object"]
    assert len(set(singles[:3])) == 3 and singles[3:] == singles[:2]


def test_each_tag_has_genevals_structure(built):
    out, _ = built
    for it in read_geneval_metadata(out / "eval/geneval_metadata.jsonl"):
        inc, tag = it["include"], it["tag"]
        keys = ["tag", "include", "exclude", "prompt"] if tag == "counting" else ["tag", "include", "prompt"]
        assert list(it) == keys
        if tag in ("single_object", "colors"):
            assert len(inc) == 1 and inc[0]["count"] == 1 and ("color" in inc[0]) == (tag == "colors")
        if tag in ("two_object", "position", "color_attr"):
            assert len(inc) == 2 and inc[0]["class"] != inc[1]["class"]
        if tag == "counting":
            assert inc[0]["count"] in COUNTS
            assert it["exclude"] == [{"class": inc[0]["class"], "count": inc[0]["count"] + 1}]
        if tag == "position":
            relation, index = inc[1]["position"]
            assert relation in RELATIONS and index == 0 and "position" not in inc[0]
            assert it["prompt"] == f"a photo of a {inc[1]['class']} {relation} a {inc[0]['class']}"
        if tag == "color_attr":
            assert inc[0]["color"] != inc[1]["color"]
            (a, ca), (b, cb) = ((c["class"], c["color"]) for c in inc)
            assert it["prompt"] == f"a photo of {prompts._a(f'{ca} {a}')} and {prompts._a(f'{cb} {b}')}"


def test_prompt_phrasing_matches_geneval():
    assert prompts.counting("square", 3)["prompt"] == "a photo of three squares"
    assert prompts.counting("cross", 2)["prompt"] == "a photo of two crosses"
    assert prompts.colors("circle", "orange")["prompt"] == "a photo of an orange circle"
    assert prompts.color_attr("circle", "orange", "square", "blue")["prompt"] == \
        "a photo of an orange circle and a blue square"
    assert prompts.count_pair("circle", 2, "red", "square", "blue")["prompt"] == \
        "a photo of two red circles and a blue square"


def test_ground_truth_renders_score_perfectly_through_detector_and_geneval_rules(built, small_cfg):
    out, _ = built
    truth = load_split(out / "eval/geneval_truth")
    items = read_geneval_metadata(out / "eval/geneval_metadata.jsonl")
    assert truth.items == items
    assert all(scene_satisfies(s, it) for s, it in zip(truth.scenes, items))
    detector = ShapesDetector(small_cfg)
    scores = geneval_score(items, [detector.detect(im) for im in truth.images])
    assert scores["overall"] == 1.0 and all(scores[tag] == 1.0 for tag in prompts.GENEVAL_TAGS)
    # the same images under wrong counts fail
    wrong = [prompts.counting(it["include"][0]["class"], 3 if it["include"][0]["count"] == 2 else 2)
             if it["tag"] == "counting" else it for it in items]
    assert geneval_score(wrong, [detector.detect(im) for im in truth.images])["counting"] == 0.0


def test_position_rule_is_the_one_the_scorer_uses():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b = rng.uniform(0, 32, (2, 2))
        box_a, box_b = [*a, *(a + rng.uniform(1, 12, 2))], [*b, *(b + rng.uniform(1, 12, 2))]
        assert relative_position(box_a, box_b) == scorer_relative_position(box_a, box_b)


def test_dpg_file_has_real_columns_valid_dependencies_and_true_checks(built):
    out, stats = built
    path = out / "eval/dpg_questions.csv"
    with open(path, newline="") as f:
        assert tuple(next(csv.reader(f))) == DPG_COLUMNS
    rows = read_dpg_questions(path)
    assert len(rows) == stats["dpg_questions"]
    by_item = collections.defaultdict(list)
    for row in rows:
        by_item[row["item_id"]].append(row)
    assert len(by_item) == stats["dpg_prompts"] == 12
    truth = load_split(out / "eval/dpg_truth")
    assert truth.ids == list(by_item)
    for (item_id, questions), scene, caption in zip(by_item.items(), truth.scenes, truth.captions):
        ids = [q["proposition_id"] for q in questions]
        assert ids == list(range(1, len(ids) + 1))
        for q in questions:
            assert q["text"] == caption
            assert q["dependency"] == [0] or all(0 < p < q["proposition_id"] for p in q["dependency"])
            assert (q["category_broad"], q["category_detailed"]) in {
                ("entity", "whole"), ("attribute", "color"), ("relation", "spatial"), ("other", "count")}
            assert q["tuple"].startswith(f"{q['category_broad']} - {q['category_detailed']} (")
            assert answer_check(q["check"], scene["objects"]), (item_id, q["question_natural_language"])
    # the evaluator's loader reads the same file, parents included
    loaded = load_dpg_questions(path)
    assert [q.dependency for p in loaded for q in p.questions] == [tuple(r["dependency"]) for r in rows]


def test_dpg_questions_of_a_dense_caption():
    item = prompts.color_position("circle", "red", "left of", "square", "blue")
    keys = ("proposition_id", "dependency", "tuple", "question_natural_language")
    rows = [tuple(r[k] for k in keys) for r in propositions(item)]
    assert rows == [
        (1, "0", "entity - whole (square)", "Is there a square?"),
        (2, "1", "attribute - color (square, blue)", "Is the square blue?"),
        (3, "0", "entity - whole (circle)", "Is there a circle?"),
        (4, "3", "attribute - color (circle, red)", "Is the circle red?"),
        (5, "1,3", "relation - spatial (circle, square, left of)", "Is the circle left of the square?"),
    ]
