"""GenEval rules on hand-built detections: each of the six tasks passes and fails as the reference."""

import json

import numpy as np
import pytest

from ditcompress.metrics import (Detection, GenEvalRules, MetricsError, geneval_score, get_evaluator,
                                 load_geneval_metadata, relative_position)
from ditcompress.metrics.color import ClipColorClassifier
from ditcompress.metrics.geneval import GENEVAL_COLORS, evaluate_image, select_objects

SINGLE = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
TWO = {"tag": "two_object", "include": [{"class": "circle", "count": 1}, {"class": "square", "count": 1}],
       "prompt": "a photo of a circle and a square"}
COUNTING = {"tag": "counting", "include": [{"class": "circle", "count": 3}],
            "exclude": [{"class": "circle", "count": 4}], "prompt": "a photo of three circles"}
COLORS = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}],
          "prompt": "a photo of a red circle"}
POSITION = {"tag": "position", "include": [{"class": "square", "count": 1},
                                           {"class": "circle", "count": 1, "position": ["left of", 0]}],
            "prompt": "a photo of a circle left of a square"}
COLOR_ATTR = {"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"},
                                               {"class": "square", "count": 1, "color": "blue"}],
              "prompt": "a photo of a red circle and a blue square"}


def det(label, score=0.95, box=(0, 0, 10, 10), color=None, mask=None):
    """A hand-built detection."""
    return Detection(label=label, score=score, box=box, color=color, mask=mask)


def correct(meta, dets, rules=GenEvalRules(), **kw):
    """The reference verdict for one image's detections."""
    return evaluate_image(select_objects(dets, meta["tag"], rules), meta, rules=rules, **kw)[0]


def test_single_object():
    assert correct(SINGLE, [det("circle", 0.5)])
    assert not correct(SINGLE, [det("circle", 0.3)])  # threshold is strict: score > 0.3
    assert not correct(SINGLE, [det("square")])


def test_two_object():
    assert correct(TWO, [det("circle"), det("square", 0.4)])
    assert not correct(TWO, [det("circle"), det("circle")])


def test_counting_threshold_and_exclude():
    three = [det("circle", 0.95, (20 * i, 0, 20 * i + 10, 10)) for i in range(3)]
    assert correct(COUNTING, three)
    assert not correct(COUNTING, three + [det("circle", 0.91)])  # four -> the exclude clause fails
    assert correct(COUNTING, three + [det("circle", 0.85)])  # 0.85 < 0.9: not counted for counting prompts
    assert not correct(COUNTING, three[:2] + [det("circle", 0.85)])  # ... so only two circles
    assert correct(SINGLE, [det("circle", 0.85)])  # while 0.85 passes the 0.3 threshold of other tasks


def test_at_most_16_objects_per_class():
    many = [det("circle", 0.99 - i * 1e-3) for i in range(20)]
    assert len(select_objects(many, "counting")["circle"]) == 16
    seventeen = {"tag": "counting", "include": [{"class": "circle", "count": 17}], "prompt": "17 circles"}
    assert not correct(seventeen, many)


def test_colors_checks_the_most_confident_objects():
    assert correct(COLORS, [det("circle", color="red")])
    assert not correct(COLORS, [det("circle", color="blue")])
    # the first `count` objects by confidence are checked, as the reference
    assert not correct(COLORS, [det("circle", 0.9, color="blue"), det("circle", 0.5, color="red")])
    assert correct(COLORS, [det("circle", 0.5, color="blue"), det("circle", 0.9, color="red")])


def test_position_and_its_margin():
    square = det("square", box=(30, 0, 40, 10))
    assert correct(POSITION, [det("circle", box=(0, 0, 10, 10)), square])
    assert not correct(POSITION, [det("circle", box=(50, 0, 60, 10)), square])  # right of
    assert not correct(POSITION, [det("circle", box=(0, 0, 10, 10))])  # no target
    # big overlapping boxes: centre offset 15 < 0.1 * (100 + 100): no relation with the margin ...
    a, b = (0, 0, 100, 100), (15, 0, 115, 100)
    assert relative_position(a, b) == set()
    assert not correct(POSITION, [det("circle", box=a), det("square", box=b)])
    # ... but "left of" without it
    assert relative_position(a, b, position_threshold=0.0) == {"left of"}
    assert correct(POSITION, [det("circle", box=a), det("square", box=b)], GenEvalRules(position_threshold=0.0))
    # diagonal offsets: both components beyond 0.5 of the normalised offset
    assert relative_position((0, 20, 10, 30), (20, 0, 30, 10)) == {"left of", "below"}


def test_color_attribute_binding():
    assert correct(COLOR_ATTR, [det("circle", color="red"), det("square", color="blue")])
    assert not correct(COLOR_ATTR, [det("circle", color="blue"), det("square", color="red")])  # swapped


def test_summary_is_mean_of_task_accuracies():
    items = [SINGLE, SINGLE, COUNTING, COUNTING, COUNTING, COUNTING]
    three = [det("circle", 0.95) for _ in range(3)]
    dets = [[det("circle")], [], three, three, three, three]
    out = geneval_score(items, dets)
    assert out["single_object"] == 0.5 and out["counting"] == 1.0
    assert out["overall"] == pytest.approx(0.75)  # not the image mean 5/6
    assert out["correct_images"] == pytest.approx(5 / 6)
    assert out["correct_prompts"] == 1.0  # each prompt has a correct image


def test_missing_colour_needs_a_classifier():
    with pytest.raises(MetricsError, match="color_clip"):
        geneval_score([COLORS], [[det("circle")]])
    calls = []

    def classifier(image, dets, classname):
        """Calls recorded; every object red."""
        calls.append(classname)
        return ["red"] * len(dets)

    image = np.zeros((16, 16, 3), np.uint8)
    assert geneval_score([COLORS], [[det("circle")]], images=[image], color_classifier=classifier)["colors"] == 1.0
    assert calls == ["circle"]


PALETTE = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class ColourClip:
    """Stand-in CLIP: texts embed as one-hot colour words, images as their nearest palette colour."""

    def embed_texts(self, texts):
        """One-hot of the colour word (5th word, before any "-colored")."""
        out = np.zeros((len(texts), len(GENEVAL_COLORS)))
        for i, t in enumerate(texts):
            out[i, GENEVAL_COLORS.index(t.split()[4].split("-")[0])] = 1.0
        return out

    def embed_images(self, crops, preprocess, batch_size):
        """One-hot of the palette colour nearest to the crop's mean."""
        assert preprocess == "processor"
        out = np.zeros((len(crops), len(GENEVAL_COLORS)))
        for i, c in enumerate(crops):
            mean = c.reshape(-1, 3).mean(0)
            name = min(PALETTE, key=lambda k: np.sum((mean - PALETTE[k]) ** 2))
            out[i, GENEVAL_COLORS.index(name)] = 1.0
        return out


def test_colour_classifier_uses_masked_crops():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:] = PALETTE["blue"]
    image[15:25, 15:25] = PALETTE["red"]
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True
    clf = ClipColorClassifier(ColourClip())
    box = (5, 5, 35, 35)  # the box is mostly blue; the mask keeps only the red object on grey
    assert clf(image, [det("circle", box=box, mask=mask)], "circle") == ["red"]
    assert clf(image, [det("circle", box=box)], "circle") == ["blue"]
    assert clf(image, [det("circle", box=(15, 15, 25, 25))], "circle") == ["red"]


def test_metadata_errors_name_the_file(tmp_path):
    with pytest.raises(MetricsError, match="missing.jsonl: GenEval metadata file not found"):
        load_geneval_metadata(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(SINGLE) + "\n{not json\n")
    with pytest.raises(MetricsError, match=r"bad.jsonl:2: not valid JSON") as err:
        load_geneval_metadata(bad)
    assert "\n" not in str(err.value)
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(MetricsError, match=r"bad.jsonl:1: expected an object with 'tag'"):
        load_geneval_metadata(bad)


class FakeDetector:
    """Exact detector for images whose top-left pixel's red channel says how many red circles there are."""

    classes = ("circle", "square")
    id = "fake"

    def detect(self, image):
        """`image[0, 0, 0]` red circles in a row."""
        return [det("circle", 1.0, (10 * i, 0, 10 * i + 5, 5), color="red") for i in range(int(image[0, 0, 0]))]


def test_geneval_evaluator_with_a_pluggable_detector(tmp_path):
    meta = tmp_path / "geneval_metadata.jsonl"
    meta.write_text("\n".join(json.dumps(m) for m in (SINGLE, COUNTING, COLORS)) + "\n")
    ev = get_evaluator("geneval", metadata=str(meta), images_per_prompt=2, detector=FakeDetector(), device="cpu")
    items = ev.items()
    assert [it["tag"] for it in items] == ["single_object"] * 2 + ["counting"] * 2 + ["colors"] * 2
    images = np.zeros((6, 8, 8, 3), np.uint8)
    images[:, 0, 0, 0] = [1, 0, 3, 4, 1, 1]  # single: 1/2, counting: 1/2, colors: 2/2
    out = ev.run(images)
    assert out["geneval/single_object"] == 0.5 and out["geneval/counting"] == 0.5 and out["geneval/colors"] == 1.0
    assert out["geneval/overall"] == pytest.approx(2 / 3)


def test_mask2former_detector_on_tiny_model(tiny_mask2former_dir):
    from ditcompress.metrics.mask2former import Mask2FormerDetector

    detector = Mask2FormerDetector(tiny_mask2former_dir, device="cpu", max_per_image=6, min_score=0.0)
    assert detector.classes == ("circle", "square", "triangle")
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    batch = detector.detect_batch(images)
    assert len(batch) == 2 and all(len(d) <= 6 for d in batch)
    single = detector.detect(images[0])
    assert [d.label for d in batch[0]] == [d.label for d in single]
    assert np.allclose([d.score for d in batch[0]], [d.score for d in single], atol=1e-6)
    for d in batch[0] + batch[1]:
        assert d.label in detector.classes and 0.0 <= d.score <= 1.0
        assert d.mask.shape == (40, 48) and d.mask.dtype == bool
        if d.mask.any():  # the box is the mask's extent (exclusive max), as mmdet's mask2bbox
            ys, xs = np.where(d.mask)
            assert d.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    # the detector plugs into the GenEval scoring unchanged
    out = geneval_score([SINGLE, TWO], batch, images=images, rules=GenEvalRules(threshold=0.0))
    assert set(out) >= {"single_object", "two_object", "overall"}
