"""DPG-Bench-style questions for shapes prompts, with a `check` a detector-based VQA can answer.

DPG-Bench decomposes each dense prompt into propositions (one CSV row each) whose questions a
VQA model answers; a child proposition only counts when its parents were answered "yes". Here
each prompt is a caption with a GenEval item, and each proposition also carries a JSON `check`
(see `truth.answer_check`) so the answer comes from detections instead of a VQA model:

    entity / whole      "Is there a circle?"                 {"type": "exists", ...}      parents: none ("0")
    other / count       "Are there three circles?"           {"type": "count", ...}       parents: the entity
    attribute / color   "Is the circle red?"                 {"type": "color", ...}       parents: the entity
    relation / spatial  "Is the circle right of the square?" {"type": "position", ...}    parents: both entities
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ditcompress.shapes.prompts import random_item
from ditcompress.shapes.vocab import NUMBER_WORDS, SHAPES

DPG_COLUMNS = (
    "item_id",
    "text",
    "keywords",
    "proposition_id",
    "dependency",
    "category_broad",
    "category_detailed",
    "tuple",
    "question_natural_language",
    "check",
)
# families whose captions hold several propositions; dense ones twice as often
DPG_FAMILIES = ("dense", "dense", "color_attr", "position", "counting", "colors")


def propositions(item: dict) -> list[dict]:
    """The DPG propositions of one caption's GenEval item, ids from 1."""
    rows: list[dict] = []
    entity_ids: list[int] = []

    def add(broad: str, detailed: str, args: str, question: str, check: dict, parents: list[int]) -> int:
        """Append one proposition; returns its id."""
        rows.append(
            {
                "proposition_id": len(rows) + 1,
                "dependency": ",".join(str(p) for p in sorted(parents)) or "0",
                "category_broad": broad,
                "category_detailed": detailed,
                "tuple": f"{broad} - {detailed} ({args})",
                "question_natural_language": question,
                "check": check,
            }
        )
        return len(rows)

    for req in item["include"]:
        shape, n = req["class"], req["count"]
        noun = shape if n == 1 else SHAPES[shape].plural
        is_are = "Is" if n == 1 else "Are"
        there = f"Is there a {shape}?" if n == 1 else f"Are there {noun}?"
        entity = add("entity", "whole", noun, there, {"type": "exists", "class": shape}, [])
        entity_ids.append(entity)
        if n > 1:
            check = {"type": "count", "class": shape, "count": n}
            add("other", "count", f"{noun}, =={n}", f"Are there {NUMBER_WORDS[n]} {noun}?", check, [entity])
        if "color" in req:
            color = req["color"]
            check = {"type": "color", "class": shape, "color": color}
            add("attribute", "color", f"{noun}, {color}", f"{is_are} the {noun} {color}?", check, [entity])
        if "position" in req:
            relation, target = req["position"]
            other = item["include"][target]["class"]
            check = {"type": "position", "a": shape, "relation": relation, "b": other}
            question = f"{is_are} the {noun} {relation} the {other}?"
            add("relation", "spatial", f"{noun}, {other}, {relation}", question, check, [entity, entity_ids[target]])
    return rows


def dpg_items(n: int, rng: np.random.Generator, shapes: tuple[str, ...], colors: tuple[str, ...]) -> list[dict]:
    """n captions (GenEval items) for the DPG file, distinct while the vocabulary allows."""
    items, seen = [], set()
    for _ in range(50 * n):
        item = random_item(DPG_FAMILIES[rng.integers(len(DPG_FAMILIES))], rng, shapes, colors)
        if item["prompt"] not in seen:
            seen.add(item["prompt"])
            items.append(item)
            if len(items) == n:
                return items
    # a tiny vocabulary has fewer distinct prompts than asked for: repeat them in order
    return [items[i % len(items)] for i in range(n)]


def write_dpg_csv(path: Path, items: list[dict], item_ids: list[str]) -> int:
    """Write the question file; returns the number of questions."""
    count = 0
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=DPG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for item_id, item in zip(item_ids, items):
            for row in propositions(item):
                check = json.dumps(row.pop("check"), sort_keys=True)
                meta = {"item_id": item_id, "text": item["prompt"], "keywords": item["tag"]}
                writer.writerow({**meta, **row, "check": check})
                count += 1
    return count


def read_dpg_questions(path: str | Path) -> list[dict]:
    """Rows of a DPG question file; `proposition_id` as int, `dependency` as a list of ints, `check` parsed."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["proposition_id"] = int(row["proposition_id"])
        row["dependency"] = [int(p) for p in row["dependency"].split(",")]
        row["check"] = json.loads(row["check"])
    return rows
