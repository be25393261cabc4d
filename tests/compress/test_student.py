"""Saving and reloading students: exact for every kind, strict on mismatch, safetensors only."""

import json
import subprocess
import sys

import pytest
import torch

import ditcompress.compress
import ditcompress.compress.student
import ditcompress.models.loading
from ditcompress.compress import MANIFEST, build_student, load_student, remove_blocks, save_student, svd_compress
from ditcompress.models.loading import WeightsMismatchError


def _predict(adapter, model, inputs):
    latents, t, cond = inputs
    with torch.no_grad():
        return adapter.predict(model, latents, t, cond)


def _students(adapter, model):
    """One student of each kind: removal, SVD, removal + SVD + iterated SVD."""
    ids = [b.id for b in adapter.blocks(model)]
    removal, _ = remove_blocks(model, [ids[1]])
    svd, _ = svd_compress(model, ids[:2], {"attn": 0.7, "mlp": 0.3})
    both, _ = remove_blocks(model, [ids[0]])
    both, _ = svd_compress(both, ids[1:3], 0.5)
    both, _ = svd_compress(both, ids[2:3], 0.5)
    return {"removal": removal, "svd": svd, "removal+svd+iterated": both}


@pytest.mark.parametrize("kind", ["removal", "svd", "removal+svd+iterated"])
def test_save_and_reload_is_exact(adapter, model, inputs, tmp_path, kind):
    student = _students(adapter, model)[kind]
    save_student(student, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "config.json", "diffusion_pytorch_model.safetensors"]
    want = _predict(adapter, student, inputs)
    fresh = build_student(tmp_path, device="cpu")  # same structure, new random weights
    assert not torch.equal(_predict(adapter, fresh, inputs), want)
    loaded = load_student(tmp_path)
    assert torch.equal(_predict(adapter, loaded, inputs), want)
    assert [b.id for b in adapter.blocks(loaded)] == [b.id for b in adapter.blocks(student)]
    assert loaded.compression_record.to_json() == student.compression_record.to_json()
    # and through the adapter, the one call stages use
    assert torch.equal(_predict(adapter, adapter.load_transformer(tmp_path), inputs), want)


def test_removal_student_is_a_plain_diffusers_directory(adapter, model, inputs, tmp_path):
    student = _students(adapter, model)["removal"]
    save_student(student, tmp_path)
    stock = adapter.transformer_cls.from_pretrained(tmp_path)
    assert torch.equal(_predict(adapter, stock, inputs), _predict(adapter, student, inputs))


def test_mismatched_weights_fail_loudly(adapter, model, tmp_path):
    student = _students(adapter, model)["svd"]
    save_student(student, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    key = next(iter(manifest["svd"]))
    manifest["svd"][key]["rank"] += 1
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(WeightsMismatchError, match="mis-shaped") as err:
        load_student(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / MANIFEST).unlink()  # without the manifest the factorised weights are unexpected
    with pytest.raises(WeightsMismatchError, match="unexpected"):
        adapter.load_transformer(tmp_path)


def test_stale_block_count_fails_loudly_where_diffusers_only_warns(adapter, model, tmp_path):
    student = _students(adapter, model)["removal"]
    save_student(student, tmp_path)
    (tmp_path / MANIFEST).unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_layers" if adapter.name == "pixart" else "num_single_layers"] += 1  # forgot register_to_config
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsMismatchError, match="missing"):
        adapter.load_transformer(tmp_path)


@pytest.mark.parametrize("first", ["ditcompress.models.loading", "ditcompress.compress.student",
                                   "ditcompress.compress", "ditcompress.models.pixart"])
def test_student_code_has_one_home_and_imports_in_any_order(first):
    names = ["MANIFEST", "build_student", "load_student", "save_student"]
    for module in (ditcompress.compress, ditcompress.compress.student):
        assert all(getattr(module, n) is getattr(ditcompress.models.loading, n) for n in names)
    assert MANIFEST == "compression.json"
    # a fresh interpreter, entering the package from one side only
    code = f"import {first}; from ditcompress.compress import load_student; import ditcompress.models.loading"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]
