"""Ground-truth checks follow GenEval's rules, on hand-made scenes with known answers."""

import pytest

from ditcompress.metrics.detection import Detection
from ditcompress.shapes import prompts
from ditcompress.shapes.truth import answer_check, relative_position, scene_satisfies


def obj(cls, color, x, y, size=8.0):
    """A scene object at centre (x, y)."""
    h = size / 2
    return {"class": cls, "color": color, "x": x, "y": y, "size": size, "bbox": [x - h, y - h, x + h, y + h]}


@pytest.mark.parametrize(
    "dx, dy, expected",
    [
        (10, 0, {"right of"}),
        (-10, 0, {"left of"}),
        (0, -10, {"above"}),  # image y grows downwards
        (10, 10, {"right of", "below"}),  # 45 degrees: both components ~0.6 > 0.5
        (1.5, 0, set()),  # inside the margin 0.1 * (8 + 8) = 1.6 px
        (3.1, 0, set()),  # (3.1 - 1.6) / 3.1 < 0.5
        (3.3, 0, {"right of"}),  # (3.3 - 1.6) / 3.3 > 0.5
        (10, 4, {"right of"}),
    ],
)
def test_relative_position_matches_genevals_rule(dx, dy, expected):
    a, b = obj("circle", "red", 16 + dx, 16 + dy), obj("square", "red", 16, 16)
    assert relative_position(a["bbox"], b["bbox"]) == expected


def test_position_item_means_first_named_object_relative_to_second():
    item = prompts.position("circle", "right of", "square")
    assert item == {
        "tag": "position",
        "include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["right of", 0]}],
        "prompt": "a photo of a circle right of a square",
    }
    assert scene_satisfies({"objects": [obj("circle", "red", 24, 16), obj("square", "blue", 8, 16)]}, item)
    assert not scene_satisfies({"objects": [obj("circle", "red", 8, 16), obj("square", "blue", 24, 16)]}, item)
    assert not scene_satisfies({"objects": [obj("circle", "red", 24, 16)]}, item)  # no target


def test_counting_uses_exclude_and_colors_require_every_counted_object():
    three = prompts.counting("triangle", 3)
    tri = [obj("triangle", c, 5 + 8 * i, 16) for i, c in enumerate(["red", "blue", "red", "green"])]
    assert scene_satisfies(tri[:3], three)
    assert not scene_satisfies(tri[:2], three)  # too few
    assert not scene_satisfies(tri, three)  # exclude: 4 >= 3 + 1
    red = prompts.colors("triangle", "red")
    assert scene_satisfies(tri[:1], red) and not scene_satisfies(tri[1:2], red)
    binding = prompts.color_attr("circle", "red", "square", "blue")
    swapped = [obj("circle", "blue", 8, 8), obj("square", "red", 24, 24)]
    assert scene_satisfies([obj("circle", "red", 8, 8), obj("square", "blue", 24, 24)], binding)
    assert not scene_satisfies(swapped, binding)
    assert scene_satisfies(swapped, prompts.two_object("square", "circle"))


def test_detections_are_judged_most_confident_first():
    item = prompts.colors("circle", "red")
    dets = [Detection("circle", 0.4, (0, 0, 8, 8), color="blue"),
            Detection("circle", 0.95, (20, 20, 28, 28), color="red")]
    assert scene_satisfies(dets, item)  # the 0.95 red circle is the one GenEval looks at
    dets[1].score = 0.3
    assert not scene_satisfies(dets, item)


def test_answer_check_on_objects():
    scene = [obj("circle", "red", 24, 16), obj("circle", "red", 24, 4), obj("square", "blue", 6, 10)]
    assert answer_check({"type": "exists", "class": "circle"}, scene)
    assert not answer_check({"type": "exists", "class": "triangle"}, scene)
    assert answer_check({"type": "count", "class": "circle", "count": 2}, scene)
    assert not answer_check({"type": "count", "class": "circle", "count": 3}, scene)
    assert answer_check({"type": "color", "class": "circle", "color": "red"}, scene)
    assert not answer_check({"type": "color", "class": "square", "color": "red"}, scene)
    assert answer_check({"type": "position", "a": "circle", "relation": "right of", "b": "square"}, scene)
    assert not answer_check({"type": "position", "a": "square", "relation": "right of", "b": "circle"}, scene)
    with pytest.raises(ValueError, match="check: unknown type 'size'"):
        answer_check({"type": "size"}, scene)
