"""Parameter accounting of the real configs on the meta device against thesis tab. 4.1 / 4.2."""

import json

import pytest

from ditcompress.cli import main
from ditcompress.models import build_transformer, get_adapter, load_config
from ditcompress.models.accounting import parameter_table

# thesis values in millions (tab. 4.1 / 4.2)
PIXART = {"self_attn": 5.3, "cross_attn": 5.3, "mlp": 10.6, "block": 21.3, "model": 610.9}
FLUX_DOUBLE = {"image_attn": 28.3, "image_mlp": 75.5, "image_modulation": 56.6, "image_projection": 9.4,
               "text_attn": 28.3, "text_mlp": 75.5, "text_modulation": 56.6, "text_projection": 9.4, "block": 339.8}
FLUX_SINGLE = {"linear1": 66.1, "projection": 47.2, "modulation": 28.3, "block": 141.6}


def _table(preset, family):
    return parameter_table(get_adapter(family), build_transformer(load_config(preset), device="meta"))


def _check(row, want):
    for part, millions in want.items():
        got = row["total"] if part == "block" else row["parts"][part]
        assert abs(got / 1e6 - millions) <= 0.05, (part, got)
    assert sum(row["parts"].values()) == row["total"] and "other" not in row["parts"]


def test_pixart_sigma_matches_table_4_1():
    table = _table("pixart-sigma", "pixart")
    assert len(table["blocks"]) == 28 and all(b["total"] == table["blocks"][0]["total"] for b in table["blocks"])
    _check(table["blocks"][0], {k: v for k, v in PIXART.items() if k != "model"})
    assert abs(table["total"] / 1e6 - PIXART["model"]) <= 0.05


def test_flux_dev_matches_table_4_2():
    table = _table("flux-dev", "flux")
    double = [b for b in table["blocks"] if b["kind"] == "double"]
    single = [b for b in table["blocks"] if b["kind"] == "single"]
    assert (len(double), len(single)) == (19, 38)
    _check(double[0], FLUX_DOUBLE)
    _check(single[-1], FLUX_SINGLE)
    assert abs(table["total"] / 1e6 - 11901.4) <= 0.05


def test_cli_params_prints_the_table(capsys):
    assert main(["params", "pixart-sigma"]) == 0
    out = capsys.readouterr().out
    assert "0-27 (x28)" in out and "610.9 M" in out
    row = next(line for line in out.splitlines() if line.startswith("0-27"))
    assert row.split()[2:] == ["5.3", "5.3", "10.6", "0.0", "21.3"]
    assert main(["params", "flux-dev"]) == 0
    out = capsys.readouterr().out
    assert "11,901.4 M" in out
    assert next(line for line in out.splitlines() if line.startswith("single.0-37")).split()[2:] == \
        ["66.1", "47.2", "28.3", "141.6"]


def test_cli_params_json_and_config_path(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**load_config("pixart-sigma"), "num_layers": 20}))
    assert main(["params", str(path), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(table["blocks"]) == 20 and table["total"] == _table("pixart-sigma", "pixart")["total"] - 8 * table["blocks"][0]["total"]


def test_cli_params_reads_a_saved_student(capsys, tmp_path):
    from ditcompress.compress import remove_blocks, save_student, svd_compress
    from ditcompress.models.tiny import tiny_transformer

    teacher = tiny_transformer("pixart-sigma")
    student, _ = svd_compress(remove_blocks(teacher, ["1"])[0], ["2"], 0.5)
    save_student(student, tmp_path)
    assert main(["params", str(tmp_path), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [b["id"] for b in table["blocks"]] == ["0", "2", "3"]
    assert table["total"] == sum(p.numel() for p in student.parameters())


@pytest.mark.parametrize("arg", ["sdxl", "missing/config.json"])
def test_cli_params_unknown_model_is_a_one_line_error(capsys, arg):
    assert main(["params", arg]) == 2
    err = capsys.readouterr().err
    assert arg in err and err.count("\n") == 1
