"""params.yaml parsing: the shipped file is valid, and every bad value is a one-line error naming the key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ditcompress.data.config import PRESET_FIELDS, GenerateConfig
from ditcompress.models.presets import PRESETS
from ditcompress.params import ParamsError, flatten, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def shipped() -> dict:
    """The repository's own params.yaml as a dict."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def with_value(dotted: str, value) -> dict:
    """The shipped params with one dotted key set (created if missing)."""
    raw = shipped()
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return raw


def test_shipped_params_parse_and_match_file():
    params = load_params(REPO / "params.yaml")
    assert params.data.image_size == shipped()["data"]["image_size"]
    assert params.model.preset == shipped()["model"]["preset"]
    assert flatten(params)["data.n_train"] == shipped()["data"]["n_train"]


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("data.colour", "red", "params.yaml: data.colour: unknown key"),
        ("bogus", 1, "params.yaml: bogus: unknown key"),
        ("data.image_size", 4, "params.yaml: data.image_size: must be >= 24 (got 4)"),
        ("data.image_size", "big", "params.yaml: data.image_size: "),
        ("seed", -1, "params.yaml: seed: must be >= 0 (got -1)"),
        ("data.n_train", 1.5, "params.yaml: data.n_train: "),
        ("model.preset", "sdxl", "params.yaml: model.preset: unknown preset 'sdxl' (known: shapes-pixart, "
                                 "shapes-flux, pixart-sigma, flux-dev)"),
        ("data.colors", ["red"], "params.yaml: data: colors: need at least 2 distinct colours"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(key, value, expected):
    with pytest.raises(ParamsError) as info:
        parse_params(with_value(key, value))
    message = str(info.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_every_preset_and_only_those_is_a_model_preset():
    assert [parse_params({"model": {"preset": name}}).model.preset for name in PRESETS] == list(PRESETS)
    with pytest.raises(ParamsError, match=r"^params.yaml: model.preset: unknown preset 'Shapes-Pixart'"):
        parse_params({"model": {"preset": "Shapes-Pixart"}})


def test_generate_defaults_are_the_pixart_sigma_preset():
    # the thesis's LAION-PixArt settings (tab. 4.3), held once, by the preset
    pixart = PRESETS["pixart-sigma"]
    assert {f: getattr(GenerateConfig(), f) for f in PRESET_FIELDS} == {
        "num_images": 100_000, "height": 512, "width": 512, "num_inference_steps": 20, "guidance_scale": 3.5,
        "max_sequence_length": 300, "torch_dtype": "bfloat16", "true_cfg_scale": 1.0}
    assert all(getattr(GenerateConfig(), f) == getattr(pixart, attr) for f, attr in PRESET_FIELDS.items())


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(bad)


def test_stage_exits_nonzero_with_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(with_value("data.image_size", 4)))
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "shapes_data.py")],
        cwd=tmp_path, env={**os.environ, "DITCOMPRESS_PARAMS": str(bad)},
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {bad}: data.image_size: must be >= 24 (got 4)"]


def test_model_pretrained_replaces_only_the_presets_weights():
    from ditcompress.models.presets import get_preset, teacher_preset

    preset = get_preset("pixart-sigma")
    assert teacher_preset(parse_params({"model": {"preset": "pixart-sigma"}}).model) == preset
    local = teacher_preset(parse_params({"model": {"preset": "pixart-sigma", "pretrained": "/w/pixart"}}).model)
    assert local.pretrained == "/w/pixart"
    assert (local.family, local.resolution, local.max_sequence_length) == (preset.family, 512, 300)
