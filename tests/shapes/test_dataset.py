"""The dataset on disk: deterministic, self-consistent, balanced over the caption families."""

import collections
import json

import numpy as np
from PIL import Image

from ditcompress.shapes.dataset import build_dataset, load_split, read_jsonl
from ditcompress.shapes.prompts import TRAIN_FAMILIES
from ditcompress.shapes.render import render_scene
from ditcompress.shapes.truth import scene_satisfies


def _files(root):
    """Relative path -> bytes of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, built, small_cfg):
    out, stats = built
    again = tmp_path / "again"
    assert build_dataset(small_cfg, 0, again, progress=False) == stats
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    build_dataset(small_cfg, 1, other, progress=False)
    for split in ("train", "reference"):
        assert (other / split / "images.npy").read_bytes() != (out / split / "images.npy").read_bytes()
        assert load_split(other / split).captions != load_split(out / split).captions


def test_train_split_does_not_depend_on_other_sizes(tmp_path, built, small_cfg):
    out, _ = built
    bigger = small_cfg.model_copy(update={"n_reference": 20, "dpg_prompts": 3})
    build_dataset(bigger, 0, tmp_path / "d", progress=False)
    assert (tmp_path / "d/train/images.npy").read_bytes() == (out / "train/images.npy").read_bytes()


def test_load_split_round_trips_and_metadata_re_renders_the_images(built, small_cfg):
    out, stats = built
    train = load_split(out / "train")
    assert train.images.dtype == np.uint8 and train.images.shape == (300, 32, 32, 3)
    assert len(train) == stats["train_images"] == 300
    assert train.ids[:2] == ["train_000000", "train_000001"]
    assert [it["prompt"] for it in train.items] == train.captions
    for scene, image in zip(train.scenes[:50], train.images[:50]):
        np.testing.assert_array_equal(render_scene(scene, 32), image)
    mapped = load_split(out / "train", mmap=True)
    np.testing.assert_array_equal(np.asarray(mapped.images), train.images)


def test_reference_pngs_equal_the_array(built):
    out, _ = built
    ref = load_split(out / "reference")
    assert len(ref) == 8
    for id_, image in zip(ref.ids, ref.images):
        np.testing.assert_array_equal(np.asarray(Image.open(out / "reference/images" / f"{id_}.png")), image)


def test_every_scene_satisfies_its_caption_and_families_are_balanced(built):
    out, stats = built
    records = read_jsonl(out / "train/metadata.jsonl")
    assert all(scene_satisfies(r["scene"], r["geneval"]) for r in records)
    counts = collections.Counter(r["tag"] for r in records)
    assert set(counts) == set(TRAIN_FAMILIES)
    assert max(counts.values()) - min(counts.values()) <= 1  # stratified, not just random
    assert stats["train_share_position"] == round(counts["position"] / 300, 4)


def test_scene_objects_are_inside_the_image_apart_and_sized_by_count(built):
    out, _ = built
    for scene in load_split(out / "train").scenes:
        objs = scene["objects"]
        assert 1 <= len(objs) <= 4
        boxes = np.array([o["bbox"] for o in objs])
        assert boxes.min() >= 1.0 and boxes.max() <= 31.0
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                gap = np.maximum(boxes[j, :2] - boxes[i, 2:], boxes[i, :2] - boxes[j, 2:]).max()
                assert gap >= 2.0 - 1e-3
        # more objects -> smaller objects (the size ranges of different counts do not overlap much)
        assert all(o["size"] >= 6.0 for o in objs)
        if len(objs) == 1:
            assert objs[0]["size"] >= 0.32 * 32 - 1e-3
        if len(objs) == 4:
            assert max(o["size"] for o in objs) <= 0.28 * 32 + 1e-3


def test_captions_follow_geneval_phrasing(built):
    out, _ = built
    train = load_split(out / "train")
    by_tag = {it["tag"]: it for it in train.items}
    assert by_tag["single_object"]["prompt"] in {f"a photo of a {s}" for s in ("circle", "triangle", "bar")}
    pos = by_tag["position"]
    a, b = pos["include"][1]["class"], pos["include"][0]["class"]
    assert pos["prompt"] == f"a photo of a {a} {pos['include'][1]['position'][0]} a {b}"
    assert all(json.loads(json.dumps(it)) == it for it in train.items)
