"""The caption stage: a real (tiny) LLaVA through transformers, bad images skipped, scene captions, resume."""

import io
import json
import tarfile
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ditcompress.data import CaptionConfig, read_captions, run_caption
from ditcompress.data.caption import VLMCaptioner
from ditcompress.data.shards import LocalProcess, add_member
from ditcompress.data.sources import FolderSource, TarSource, open_source
from ditcompress.errors import UserError


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _random_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (20 + 3 * i, 24, 3), dtype=np.uint8)) for i in range(n)]


def _vlm_cfg(model, **kw):
    # greedy decoding so batched and one-by-one captions can be compared exactly; a short prompt
    # so the tiny model's caption depends on the image
    return CaptionConfig(model=str(model), prompt="describe this image", system_prompt="", do_sample=False,
                         max_new_tokens=6, torch_dtype="float32", **kw)


def test_vlm_captions_images_and_reports_corrupt_truncated_and_empty_files(tiny_llava, tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    good = _random_images(4)
    for i, img in enumerate(good[:3]):
        img.save(folder / f"good{i}.png")
    good[3].save(folder / "sub" / "good.3.jpg", quality=90)  # nested, dotted stem -> id "sub/good_3"
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    (folder / "truncated.png").write_bytes(_png(good[0])[:300])
    (folder / "empty.webp").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, not listed")

    metrics = run_caption(_vlm_cfg(tiny_llava, batch_size=3, shard_size=4), folder, tmp_path / "out",
                          process=LocalProcess())

    captions = read_captions(tmp_path / "out")
    assert sorted(captions) == ["good0", "good1", "good2", "sub/good_3"]
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in skipped) == ["corrupt", "empty", "truncated"]
    assert all(r["reason"].startswith("cannot decode:") for r in skipped)
    assert "truncated" in next(r["reason"] for r in skipped if r["id"] == "truncated")
    assert metrics["captioned"] == 4 and metrics["skipped"] == 3 and metrics["images"] == 7

    # the batched stage gives each image its own caption: the same as captioning it alone
    captioner = VLMCaptioner(_vlm_cfg(tiny_llava), "cpu")
    source = FolderSource(folder)
    alone = {i: captioner([source.load(i)[0]], [None])[0] for i in captions}
    assert captions == alone
    assert len(set(alone.values())) > 1  # and images do not all read the same


def test_scene_captioner_reads_shapes_metadata(shapes_split, tmp_path, make_tracker):
    cfg = CaptionConfig(captioner="scene", shard_size=3, batch_size=2)
    tracker = make_tracker()
    metrics = run_caption(cfg, shapes_split, tmp_path / "out", tracker, process=LocalProcess())
    records = [json.loads(line) for line in (shapes_split / "metadata.jsonl").read_text().splitlines()]
    assert read_captions(tmp_path / "out") == {r["id"]: r["caption"] for r in records}
    assert metrics["captioned"] == 7 and metrics["skipped"] == 0
    grid = tracker.images["caption_samples.png"]  # the first shard's 3 images, 16 px tiles upscaled to 128
    assert grid.width > 2 * 128 and grid.height > 2 * 128


def test_scene_captioner_without_metadata_is_an_error(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _random_images(1)[0].save(folder / "a.png")
    with pytest.raises(UserError, match="scene metadata"):
        run_caption(CaptionConfig(captioner="scene"), folder, tmp_path / "out", process=LocalProcess())


def test_two_processes_and_a_resume_write_the_same_files_as_one_run(shapes_split, tmp_path):
    cfg = CaptionConfig(captioner="scene", shard_size=2)
    run_caption(cfg, shapes_split, tmp_path / "one", process=LocalProcess())
    # two processes as two threads meeting at a real barrier (the accelerate run is in test_generate)
    barrier = threading.Barrier(2, timeout=60)
    results = {}

    def rank(r):
        process = LocalProcess(r, 2)
        process.wait_for_everyone = barrier.wait
        results[r] = run_caption(cfg, shapes_split, tmp_path / "two", process=process)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    metrics = results[0]
    assert results[1] == {}
    (tmp_path / "two" / "shards" / "shard-00002.jsonl").unlink()  # as if killed before this shard
    resumed = run_caption(cfg, shapes_split, tmp_path / "two", process=LocalProcess())

    one = {p.name: p.read_bytes() for p in (tmp_path / "one" / "shards").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two" / "shards").iterdir()}
    assert one == two and len(one) == 8  # 4 caption files + 4 skip reports
    assert metrics["new_images"] == 7 and resumed["new_images"] == 2


def test_webdataset_source_lists_keys_and_decodes_pixels(tmp_path):
    images = _random_images(3)
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for i, img in enumerate(images):
            add_member(tar, f"s{i}.png", _png(img))
            add_member(tar, f"s{i}.json", b"{}")
        add_member(tar, "meta_only.json", b"{}")  # no image: not a sample to caption
    source = open_source(tmp_path)
    assert isinstance(source, TarSource) and source.ids() == ["s0", "s1", "s2"]
    for i, img in enumerate(images):
        np.testing.assert_array_equal(np.asarray(source.load(f"s{i}")[0]), np.asarray(img))


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_caption_files_with_empty_or_duplicate_ids_are_clear_errors(tmp_path):
    bad = tmp_path / "empty_id"
    bad.mkdir()
    _write_jsonl(bad / "a.jsonl", [{"id": "x", "caption": "a red circle"}, {"id": "", "caption": "a square"}])
    with pytest.raises(UserError, match=r"a\.jsonl:2: empty id"):
        read_captions(bad)

    dup = tmp_path / "dup"
    dup.mkdir()
    _write_jsonl(dup / "a.jsonl", [{"id": "x", "caption": "a red circle"}])
    pq.write_table(pa.table({"id": ["y", "x"], "caption": ["a square", "a circle"]}), dup / "b.parquet")
    with pytest.raises(UserError, match=r"b\.parquet:2: duplicate id 'x' \(first at .*a\.jsonl:1\)"):
        read_captions(dup)

    blank = tmp_path / "blank.jsonl"
    _write_jsonl(blank, [{"id": "x", "caption": "  "}])
    with pytest.raises(UserError, match="empty caption for id 'x'"):
        read_captions(blank)


def test_reading_an_unfinished_caption_stage_is_an_error(shapes_split, tmp_path):
    run_caption(CaptionConfig(captioner="scene", shard_size=2), shapes_split, tmp_path / "out", process=LocalProcess())
    (tmp_path / "out" / "shards" / "shard-00001.jsonl").unlink()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (tmp_path / "out" / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(UserError, match="has not finished"):
        read_captions(tmp_path / "out")
