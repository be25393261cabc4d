"""The generate stage on tiny PixArt-Σ / Flux pipelines: image contents, regeneration, kill + resume, 2 processes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from ditcompress.data import GenerateConfig, read_captions, regenerate, run_generate
from ditcompress.data.dataset import TeacherDataset
from ditcompress.data.generate import encode_image, generation_order
from ditcompress.data.shards import LocalProcess, seed_for
from ditcompress.errors import UserError

WORKER = Path(__file__).with_name("generate_worker.py")
# 10 captions -> shards of 3, 3, 3, 1; batches of 2 so a shard holds a partial batch
CFG = GenerateConfig(num_images=None, height=16, width=16, num_inference_steps=4, max_sequence_length=8,
                     batch_size=2, shard_size=3, torch_dtype="float32")


def _shard_bytes(out_dir):
    return {p.name: p.read_bytes() for p in sorted((out_dir / "shards").iterdir())}


def _tree_bytes(out_dir):
    """Every file of an output directory by relative path (what DVC hashes)."""
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()}


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def reference(caption_set, tiny_pixart, tmp_path_factory, one_thread, make_tracker):
    """An uninterrupted single-process run, its metrics and what it logged."""
    out, tracker = tmp_path_factory.mktemp("reference"), make_tracker()
    return out, run_generate(CFG, caption_set, tiny_pixart, "pixart", out, tracker, process=LocalProcess()), tracker


def test_shards_hold_each_image_with_its_prompt_seed_and_settings(reference, caption_set):
    out, metrics, tracker = reference
    captions = read_captions(caption_set)
    assert metrics["images"] == metrics["new_images"] == 10 and metrics["shards"] == 4
    seen = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            for k in range(0, len(names), 3):  # webdataset: a sample's files are adjacent
                item_id = names[k].removesuffix(".json")
                assert names[k : k + 3] == [f"{item_id}.json", f"{item_id}.png", f"{item_id}.txt"]
                record = json.load(tar.extractfile(names[k]))
                assert record["prompt"] == captions[item_id] == tar.extractfile(names[k + 2]).read().decode()
                assert record["seed"] == seed_for(0, item_id)
                assert (record["height"], record["num_inference_steps"], record["guidance_scale"]) == (16, 4, 3.5)
                assert record["max_sequence_length"] == 8 and record["family"] == "pixart"
                assert Image.open(tar.extractfile(names[k + 1])).size == (16, 16)
                seen.append(item_id)
    assert seen == generation_order(captions, 0)  # every caption once, in generation order

    data = TeacherDataset(out)
    assert [data[i]["id"] for i in range(len(data))] == seen
    pixels = [np.asarray(data[i]["image"]) for i in range(len(data))]
    assert len({p.tobytes() for p in pixels}) == 10  # distinct seeds and prompts -> distinct images
    with tarfile.open(out / "shards" / "shard-00000.tar") as tar:
        first = np.asarray(Image.open(tar.extractfile(f"{seen[0]}.png")))
    np.testing.assert_array_equal(pixels[0], first)

    # a throughput point per shard, and a sample grid of 10 tiles with captions underneath
    assert [step for step, _ in tracker.metrics] == [1, 2, 3, 4]
    grid = tracker.images["generate_samples.png"]
    assert grid.width > 4 * 128 and grid.height > 3 * 128  # 4 x 3 tiles, each upscaled to >= 128 px


def test_flux_family_generates_through_the_same_stage(caption_set, tiny_flux, tmp_path, one_thread):
    cfg = CFG.model_copy(update={"num_images": 3})
    metrics = run_generate(cfg, caption_set, tiny_flux, "flux", tmp_path, process=LocalProcess())
    data = TeacherDataset(tmp_path)
    assert metrics["images"] == len(data) == 3
    record = data.record(2)
    assert record["family"] == "flux" and "negative_prompt" not in record  # guidance-distilled: no negative
    np.testing.assert_array_equal(np.asarray(regenerate(record, tiny_flux)), np.asarray(data[2]["image"]))


def test_flux_true_cfg_is_the_negative_branch_extrapolated(caption_set, tiny_flux, tmp_path, one_thread):
    """FluxPipeline's true CFG is v_neg + s·(v − v_neg): with the negative prompt as the prompt it is
    the plain sample at any scale, with another prompt it is not; records carry the settings."""
    from ditcompress.sampling import Renderer

    guided_cfg = CFG.model_copy(update={"true_cfg_scale": 4.0, "negative_prompt": ""})
    guided = Renderer.load(tiny_flux, "flux", guided_cfg)
    plain = Renderer(guided.pipeline, "flux", CFG)
    assert plain.negative() is None and guided.negative() is not None  # scale 1: no negative branch
    for prompt, same in (("", True), ("a red circle", False)):
        with_cfg = guided.render([prompt], [5])[0].astype(float)
        without = plain.render([prompt], [5])[0].astype(float)
        assert (np.abs(with_cfg - without).max() <= 1) == same, prompt  # 1 grey level: uint8 rounding

    cfg = guided_cfg.model_copy(update={"num_images": 2})
    run_generate(cfg, caption_set, tiny_flux, "flux", tmp_path, process=LocalProcess())
    data = TeacherDataset(tmp_path)
    record = data.record(1)
    assert record["true_cfg_scale"] == 4.0 and record["negative_prompt"] == ""
    np.testing.assert_array_equal(np.asarray(regenerate(record, tiny_flux)), np.asarray(data[1]["image"]))


def test_any_image_can_be_regenerated_alone(reference, tiny_pixart):
    out, _, _ = reference
    data = TeacherDataset(out)
    for i in (0, 4):  # first of a batch, and the second image of a batch
        record = data.record(i)
        alone = regenerate(record, tiny_pixart)
        with tarfile.open(out / "shards" / data.where[i][0]) as tar:
            assert encode_image(alone, "png") == tar.extractfile(f"{record['id']}.png").read()


def test_killed_run_resumes_to_the_same_bytes(reference, caption_set, tiny_pixart, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "stalled"
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), CFG.model_dump_json(), str(caption_set), str(tiny_pixart), str(out),
         "--stall-after", "2", "--marker", str(marker)], env=_env(), stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists():
        assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "worker never reached the third shard"
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)  # with shard 3 written to its temp file but not published
    worker.wait()
    worker.stderr.close()
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.tar", "shard-00001.tar",
                                                                  "shard-00002.tar.tmp"]

    metrics = run_generate(CFG, caption_set, tiny_pixart, "pixart", out, process=LocalProcess())
    assert metrics["new_images"] == 4 and metrics["images"] == 10
    assert _shard_bytes(out) == _shard_bytes(reference[0])  # no hole, no duplicate, same bytes
    # and every other file too: the output's DVC hash does not depend on the kill
    assert _tree_bytes(out) == _tree_bytes(reference[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_accelerate_processes_write_the_same_dataset_as_one(reference, caption_set, tiny_pixart, tmp_path):
    out = tmp_path / "out"
    # accelerate's CPU launcher (--cpu) starts one process; --multi_gpu drives torchrun, and the
    # library asks PartialState for the gloo backend when there is no GPU
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    logs = tmp_path / "logs"
    logs.mkdir()
    done = subprocess.run([*launch, str(WORKER), CFG.model_dump_json(), str(caption_set), str(tiny_pixart), str(out),
                           "--log-dir", str(logs)], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    by_rank = {r: set((logs / f"rank-{r}.txt").read_text().split()) for r in (0, 1)}
    assert by_rank == {0: {"shard-00000.tar", "shard-00002.tar"}, 1: {"shard-00001.tar", "shard-00003.tar"}}
    assert _shard_bytes(out) == _shard_bytes(reference[0])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["complete_items"] == 10 and "new_items" not in manifest
    assert _tree_bytes(out) == _tree_bytes(reference[0])


def test_resuming_with_other_settings_is_an_error(caption_set, tiny_pixart, tmp_path):
    small = CFG.model_copy(update={"num_images": 2, "num_inference_steps": 1})
    run_generate(small, caption_set, tiny_pixart, "pixart", tmp_path, process=LocalProcess())
    with pytest.raises(UserError, match=r"num_inference_steps: 1 -> 2"):
        run_generate(small.model_copy(update={"num_inference_steps": 2}), caption_set, tiny_pixart, "pixart",
                     tmp_path, process=LocalProcess())
    with pytest.raises(UserError, match="num_images: 11 but .* has 10 captions"):
        run_generate(small.model_copy(update={"num_images": 11}), caption_set, tiny_pixart, "pixart", tmp_path,
                     process=LocalProcess())


def test_stage_mode_starts_over_when_settings_change(caption_set, tiny_pixart, tmp_path):
    """What `dvc exp run -S generate....` relies on: other settings replace the old dataset."""
    small = CFG.model_copy(update={"num_images": 2, "num_inference_steps": 1})
    run_generate(small, caption_set, tiny_pixart, "pixart", tmp_path, process=LocalProcess())
    other = small.model_copy(update={"num_images": 4, "num_inference_steps": 2})
    metrics = run_generate(other, caption_set, tiny_pixart, "pixart", tmp_path, process=LocalProcess(),
                           restart_if_changed=True)
    assert metrics["images"] == 4 and metrics["new_images"] == 4
    assert len(TeacherDataset(tmp_path)) == 4
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["settings"]["num_inference_steps"] == 2
    # same settings again: nothing is regenerated
    again = run_generate(other, caption_set, tiny_pixart, "pixart", tmp_path, process=LocalProcess(),
                         restart_if_changed=True)
    assert again["new_images"] == 0 and again["images"] == 4


def test_stage_mode_starts_over_when_the_teacher_is_retrained(caption_set, tiny_pixart, tmp_path):
    """A retrained teacher saved at the same path replaces the old teacher's images."""
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_pixart, teacher)
    small = CFG.model_copy(update={"num_images": 2, "num_inference_steps": 1})
    out = tmp_path / "out"
    run_generate(small, caption_set, teacher, "pixart", out, process=LocalProcess())
    before = _shard_bytes(out)
    (weights,) = (teacher / "transformer").glob("*.safetensors")
    state = load_file(weights)
    state = {k: v + 0.05 if k.startswith("proj_out") else v for k, v in state.items()}
    save_file(state, weights)
    with pytest.raises(UserError, match="teacher_digest"):
        run_generate(small, caption_set, teacher, "pixart", out, process=LocalProcess())
    metrics = run_generate(small, caption_set, teacher, "pixart", out, process=LocalProcess(), restart_if_changed=True)
    assert metrics["new_images"] == 2 and _shard_bytes(out) != before


def test_unset_inference_settings_come_from_the_preset():
    from ditcompress.data.config import for_preset
    from ditcompress.models.presets import get_preset
    from ditcompress.params import parse_params

    flux = get_preset("flux-dev")
    cfg = for_preset(parse_params({"generate": {"num_inference_steps": 7}}).generate, flux)
    assert (cfg.height, cfg.width, cfg.guidance_scale, cfg.max_sequence_length) == (1024, 1024, 3.5, 512)
    assert cfg.num_images == 190_000 and cfg.torch_dtype == "bfloat16"
    assert cfg.true_cfg_scale == 1.0  # guidance-distilled: no negative branch
    assert cfg.num_inference_steps == 7  # set in params: wins over the preset's 50
    # the shapes Flux teacher is not guidance-distilled: it samples with true CFG
    assert for_preset(parse_params({}).generate, get_preset("shapes-flux")).true_cfg_scale == 3.5
    shapes = for_preset(parse_params({}).generate, get_preset("shapes-pixart"))
    assert (shapes.height, shapes.num_images, shapes.torch_dtype, shapes.max_sequence_length) == (32, 1000, "float32",
                                                                                                   16)
