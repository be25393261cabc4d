"""The compress stage's library on the session's tiny world: the student of the score stage's
selection, its figures equal to the selection's, SVD by groups, and bad inputs."""

import json

import pytest

from ditcompress.compress import load_student
from ditcompress.compress.stage import run_compress
from ditcompress.errors import UserError
from ditcompress.params import ParamsError, parse_params
from ditcompress.score.run import run_score

from ..shrunk import params_with

SCORE = {"prompts": 6, "cka_prompts": 2, "batch_size": 6, "device": "cpu", "criteria": ["metric"],
         "selection": {"k": 1}}


def test_the_student_of_the_selection_scores_what_the_selection_scored(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    run_score(params_with(raw, score=SCORE), "data/score_c")
    sel = json.loads((root / "data" / "score_c" / "selection.json").read_text())
    params = params_with(raw, score=SCORE, compress={"selection": "data/score_c/selection.json"})
    metrics = run_compress(params, "students/compressed")
    student = load_student(root / "students" / "compressed")
    assert student.compression_record.removed == sel["blocks"]
    assert metrics["params"] == sum(p.numel() for p in student.parameters())
    assert metrics["kept_fraction"] == pytest.approx(sel["kept_fraction"])
    # the same renders: the score stage measured this very subset in place
    assert metrics["cmmd"] == pytest.approx(sel["cmmd"], rel=1e-9)
    assert metrics["clip_score"] == pytest.approx(sel["clip_score"], rel=1e-9)


def test_svd_by_groups_on_given_blocks(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    params = params_with(raw, score=SCORE, compress={"method": "svd", "blocks": ["0", "1"],
                                                     "ratio": {"attn": 0.8, "mlp": 0.4}})
    metrics = run_compress(params, "students/svd")
    record = load_student(root / "students" / "svd").compression_record
    assert record.removed == [] and record.svd and all(k.split(".")[0] in ("0", "1") for k in record.svd)
    assert 0 < metrics["removed_params"] and metrics["blocks"] == 2


def test_bad_inputs_are_one_line_errors(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    with pytest.raises(UserError, match="compress.blocks: unknown block id '9'"):
        run_compress(params_with(raw, score=SCORE, compress={"blocks": ["9"]}), "students/bad")
    with pytest.raises(UserError, match="compress.selection: nowhere.json: no selection"):
        run_compress(params_with(raw, score=SCORE, compress={"selection": "nowhere.json"}), "students/bad")
    with pytest.raises(ParamsError, match=r"compress: ratio: SVD ratios are fractions in \(0, 1\) \(got 1.5\)"):
        parse_params({"compress": {"ratio": {"attn": 1.5}}})
