"""Captions as GenEval metadata items: prompt text plus the machine-checkable `include`/`exclude`.

Every caption in the shapes world is built together with its GenEval item (the format of
GenEval's `evaluation_metadata.jsonl`), so the same rules score generated images (through the
detector) and validate rendered scenes (through `truth.scene_satisfies`). Phrasing follows
GenEval's prompts: "a photo of a dog right of a teddy bear" means the dog is right of the bear,
and its item lists the bear first and the dog with `"position": ["right of", 0]`.

Besides GenEval's six tags, training uses a seventh family, `dense`: captions that bind several
attributes at once (colour + position, colour + count, count + two classes). They play the
detailed captions of the real training set and make the DPG-Bench-style prompts learnable.
"""

from __future__ import annotations

import itertools

import numpy as np

from ditcompress.shapes.vocab import COUNTS, NUMBER_WORDS, RELATIONS, SHAPES, article

GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
TRAIN_FAMILIES = (*GENEVAL_TAGS, "dense")


def _a(phrase: str) -> str:
    """Phrase with its indefinite article: 'an orange circle'."""
    return f"{article(phrase)} {phrase}"


def _req(shape: str, count: int = 1, color: str | None = None, position=None) -> dict:
    """One `include` clause, keys in GenEval's order."""
    req = {"class": shape, "count": count}
    if color is not None:
        req["color"] = color
    if position is not None:
        req["position"] = list(position)
    return req


def _item(tag: str, include: list[dict], prompt: str, exclude: list[dict] | None = None) -> dict:
    """A GenEval metadata line (keys in the order of the official file)."""
    item = {"tag": tag, "include": include}
    if exclude:
        item["exclude"] = exclude
    item["prompt"] = prompt
    return item


def _count_phrase(shape: str, n: int, color: str | None = None) -> str:
    """'a circle', 'three red triangles'."""
    noun = shape if n == 1 else SHAPES[shape].plural
    words = f"{color} {noun}" if color else noun
    return _a(words) if n == 1 else f"{NUMBER_WORDS[n]} {words}"


def single_object(shape: str) -> dict:
    """'a photo of a circle'."""
    return _item("single_object", [_req(shape)], f"a photo of {_a(shape)}")


def two_object(a: str, b: str) -> dict:
    """'a photo of a circle and a square'."""
    return _item("two_object", [_req(a), _req(b)], f"a photo of {_a(a)} and {_a(b)}")


def counting(shape: str, n: int) -> dict:
    """'a photo of three triangles': at least n and fewer than n + 1."""
    return _item("counting", [_req(shape, n)], f"a photo of {_count_phrase(shape, n)}", [_req(shape, n + 1)])


def colors(shape: str, color: str) -> dict:
    """'a photo of a red circle'."""
    return _item("colors", [_req(shape, 1, color)], f"a photo of {_a(f'{color} {shape}')}")


def position(a: str, relation: str, b: str) -> dict:
    """'a photo of a circle right of a square': the circle is right of the square."""
    return _item("position", [_req(b), _req(a, position=(relation, 0))], f"a photo of {_a(a)} {relation} {_a(b)}")


def color_attr(a: str, color_a: str, b: str, color_b: str) -> dict:
    """'a photo of a red circle and a blue square'."""
    prompt = f"a photo of {_a(f'{color_a} {a}')} and {_a(f'{color_b} {b}')}"
    return _item("color_attr", [_req(a, 1, color_a), _req(b, 1, color_b)], prompt)


def color_position(a: str, color_a: str, relation: str, b: str, color_b: str) -> dict:
    """'a photo of a red circle right of a blue square' (dense)."""
    prompt = f"a photo of {_a(f'{color_a} {a}')} {relation} {_a(f'{color_b} {b}')}"
    return _item("dense", [_req(b, 1, color_b), _req(a, 1, color_a, (relation, 0))], prompt)


def color_count(shape: str, color: str, n: int) -> dict:
    """'a photo of three red triangles' (dense)."""
    prompt = f"a photo of {_count_phrase(shape, n, color)}"
    return _item("dense", [_req(shape, n, color)], prompt, [_req(shape, n + 1)])


def count_pair(a: str, n: int, color_a: str, b: str, color_b: str) -> dict:
    """'a photo of two red circles and a blue square' (dense)."""
    prompt = f"a photo of {_count_phrase(a, n, color_a)} and {_count_phrase(b, 1, color_b)}"
    return _item("dense", [_req(a, n, color_a), _req(b, 1, color_b)], prompt, [_req(a, n + 1), _req(b, 2)])


def all_geneval_items(tag: str, shapes: tuple[str, ...], colors_: tuple[str, ...]) -> list[dict]:
    """Every distinct GenEval prompt of one tag that the vocabulary can express."""
    pairs = list(itertools.permutations(shapes, 2))
    color_pairs = list(itertools.permutations(colors_, 2))
    if tag == "single_object":
        return [single_object(s) for s in shapes]
    if tag == "two_object":
        return [two_object(a, b) for a, b in pairs]
    if tag == "counting":
        return [counting(s, n) for s in shapes for n in COUNTS]
    if tag == "colors":
        return [colors(s, c) for s in shapes for c in colors_]
    if tag == "position":
        return [position(a, r, b) for a, b in pairs for r in RELATIONS]
    if tag == "color_attr":
        return [color_attr(a, ca, b, cb) for a, b in pairs for ca, cb in color_pairs]
    raise ValueError(f"unknown GenEval tag {tag!r} (known: {', '.join(GENEVAL_TAGS)})")


def random_item(family: str, rng: np.random.Generator, shapes: tuple[str, ...], colors_: tuple[str, ...]) -> dict:
    """A random caption of one training family."""
    shape = lambda: shapes[rng.integers(len(shapes))]  # noqa: E731
    color = lambda: colors_[rng.integers(len(colors_))]  # noqa: E731
    pair = lambda names: tuple(names[i] for i in rng.permutation(len(names))[:2])  # noqa: E731
    relation = lambda: RELATIONS[rng.integers(len(RELATIONS))]  # noqa: E731
    count = lambda: int(COUNTS[rng.integers(len(COUNTS))])  # noqa: E731
    if family == "single_object":
        return single_object(shape())
    if family == "two_object":
        return two_object(*pair(shapes))
    if family == "counting":
        return counting(shape(), count())
    if family == "colors":
        return colors(shape(), color())
    if family == "position":
        a, b = pair(shapes)
        return position(a, relation(), b)
    if family == "color_attr":
        (a, b), (ca, cb) = pair(shapes), pair(colors_)
        return color_attr(a, ca, b, cb)
    if family == "dense":
        kind = rng.integers(3)
        if kind == 0:
            (a, b), (ca, cb) = pair(shapes), pair(colors_)
            return color_position(a, ca, relation(), b, cb)
        if kind == 1:
            return color_count(shape(), color(), count())
        (a, b), (ca, cb) = pair(shapes), pair(colors_)
        return count_pair(a, int(rng.integers(2, 4)), ca, b, cb)  # at most 4 objects in all
    raise ValueError(f"unknown caption family {family!r} (known: {', '.join(TRAIN_FAMILIES)})")
