"""Every stage's `params:` in dvc.yaml covers every params.yaml key the stage reads.

DVC reruns a stage only when a listed key changes, so a key the stage reads but does not list
leaves `dvc exp run -S key=value` with a stale, "up to date" stage. `READS` traces what each
stage reads through its script and the library call it makes; the keys of a section come from
its config class (`ditcompress.params.Params`), including those params.yaml leaves out. A
stage added to dvc.yaml fails here until it has an entry.
"""

import ast
import shlex
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from ditcompress.data.config import GenerateConfig
from ditcompress.params import Params

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS_YAML = yaml.safe_load((REPO / "params.yaml").read_text())

# evaluate renders with for_preset(generate) like generate, minus what only shapes a dataset
_GENERATE_DATASET_ONLY = ("num_images", "shard_size", "image_format")

# What each stage's outputs depend on: a section stands for every key of its config class.
READS = {
    # build_dataset(params.data, params.seed, ...)
    "shapes_data": ["seed", "data"],
    # run_pretrain(params.pretrain, data/shapes, ..., params.seed): no data.* key; the dataset
    # reaches it as the data/shapes dependency
    "pretrain": ["seed", "pretrain"],
    # run_caption(params.caption, params.caption.source, ...)
    "caption": ["caption"],
    # for_preset(params.generate, teacher_preset(params.model)): every GenerateConfig key,
    # set in params.yaml or filled from the preset
    "generate": ["model", "generate"],
    # run_evaluate(params): the preset; ShapesDetector(params.data) takes data.shapes only (it
    # names colours from its own palette); the renderer's for_preset(params.generate); evaluate.*
    "evaluate": ["model", "data.shapes", "evaluate",
                 *(f"generate.{k}" for k in GenerateConfig.model_fields if k not in _GENERATE_DATASET_ONLY)],
    # run_score(params): the preset and the renderer's for_preset(params.generate) (batch size from
    # score.batch_size); ShapesDetector(params.data) for the damage's GenEval; the reference set,
    # CMMD / CLIP / GenEval settings of evaluate.*; score.*
    "score": ["model", "data.shapes", "score", "evaluate",
              *(f"generate.{k}" for k in GenerateConfig.model_fields
                if k not in (*_GENERATE_DATASET_ONLY, "batch_size"))],
    # run_compress(params): compress.*; the score stage's probe (build_probe) on its reference
    # prompts: score.prompts/seed/batch_size/device, the renderer's generate keys, evaluate.*
    "compress": ["model", "compress", "score.prompts", "score.seed", "score.batch_size", "score.device", "evaluate",
                 *(f"generate.{k}" for k in GenerateConfig.model_fields
                   if k not in (*_GENERATE_DATASET_ONLY, "batch_size"))],
    # run_distill(params): the preset and the teacher pipeline's for_preset(params.generate) (text
    # length, dtype; prompt batches); distill.*; the "LAION" images at caption.source (read as
    # caption.source_format); the sample grid's prompts from evaluate.reference(_captions)
    "distill": ["model", "generate", "distill", "caption.source", "caption.source_format", "evaluate.reference",
                "evaluate.reference_captions"],
    # run_schedule(params): schedule.*; each round's probe (build_probe, as compress), run_distill
    # (as distill) and run_evaluate (as evaluate: data.shapes, evaluate.*, the generate keys)
    "schedule": ["model", "data.shapes", "schedule", "distill", "generate", "evaluate", "score.prompts", "score.seed",
                 "score.batch_size", "score.device", "caption.source", "caption.source_format"],
}
# Not in READS although run_stage reads them for every stage: `tracking.experiment` only names
# the MLflow experiment, and the global RNGs seeded from `seed` are not drawn from by caption,
# generate or evaluate (each caption batch and each image has a generator seeded from
# caption.seed / generate.seed). stage_run always logs `seed` and `model` to MLflow.
ALWAYS_LOGGED = {"seed", "model"}


def _config_class(annotation):
    """The pydantic class of a field, or None for a leaf (number, string, list, dict...)."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def leaf_keys(key: str) -> set[str]:
    """The dotted leaf keys under `key` (itself for a leaf), from the config classes of `Params`."""
    model = Params
    for part in key.split("."):
        assert model is not None and part in model.model_fields, f"{key}: not a key of Params"
        model = _config_class(model.model_fields[part].annotation)
    if model is None:
        return {key}
    return {leaf for name in model.model_fields for leaf in leaf_keys(f"{key}.{name}")}


def dvc_params(stage: str) -> list[str]:
    """The params.yaml keys a dvc.yaml stage lists (plain entries or a `params.yaml:` mapping)."""
    keys = []
    for entry in DVC_YAML[stage].get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        else:
            assert set(entry) == {"params.yaml"}, f"{stage}: params from another file: {entry}"
            keys.extend(entry["params.yaml"])
    return keys


def covers(entry: str, key: str) -> bool:
    """A dvc.yaml entry covers itself and, for a section, every key under it."""
    return key == entry or key.startswith(entry + ".")


def run_stage_call(stage: str) -> tuple[str, list[str]]:
    """(name, sections) of the `run_stage(name, sections, main)` call in the stage's script."""
    script = next((a for a in shlex.split(DVC_YAML[stage]["cmd"]) if a.endswith(".py")), None)
    assert script is not None, f"{stage}: cmd runs no python script: {DVC_YAML[stage]['cmd']}"
    calls = [node for node in ast.walk(ast.parse((REPO / script).read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_stage"]
    assert len(calls) == 1, f"{script}: expected one run_stage(name, sections, main) call"
    name, sections = (ast.literal_eval(arg) for arg in calls[0].args[:2])
    return name, list(sections)


def test_every_stage_has_a_reads_entry():
    unmapped = sorted(set(DVC_YAML) - set(READS))
    assert not unmapped, (f"dvc.yaml stage(s) {unmapped} have no READS entry in {Path(__file__).name}: add the "
                          "params.yaml keys each one reads (stages/<name>.py and the library call it makes)")
    assert not set(READS) - set(DVC_YAML), f"READS names stages dvc.yaml lacks: {sorted(set(READS) - set(DVC_YAML))}"


@pytest.mark.parametrize("stage", sorted(DVC_YAML))
def test_stage_lists_every_key_it_reads(stage):
    assert stage in READS, f"{stage}: no READS entry (see test_every_stage_has_a_reads_entry)"
    listed = dvc_params(stage)
    read = {leaf for key in READS[stage] for leaf in leaf_keys(key)}
    missing = sorted(k for k in read if not any(covers(e, k) for e in listed))
    assert not missing, f"dvc.yaml: stage {stage} reads {missing} but its params: do not list them"
    unread = [e for e in listed if not any(covers(e, k) for k in read)]
    assert not unread, f"dvc.yaml: stage {stage} lists {unread}, which it does not read"


@pytest.mark.parametrize("stage", sorted(DVC_YAML))
def test_listed_keys_exist_in_params_yaml(stage):
    """DVC refuses to run a stage whose listed key params.yaml lacks; set-by-preset keys need a section entry."""
    for entry in dvc_params(stage):
        node = PARAMS_YAML
        for part in entry.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml: stage {stage} lists {entry}, absent from params.yaml"
            node = node[part]


@pytest.mark.parametrize("stage", sorted(DVC_YAML))
def test_stage_script_logs_the_sections_it_reads(stage):
    """The script's run_stage(name, sections) names the stage and logs to MLflow every section in READS.

    It may log more: pretrain logs `data`, the settings of the dataset it trains on (a dependency).
    """
    name, sections = run_stage_call(stage)
    assert name == stage, f"{stage}: its script calls run_stage({name!r}, ...)"
    read = {key.split(".")[0] for key in READS.get(stage, [])} - ALWAYS_LOGGED
    assert read <= set(sections), (f"{stage}: READS names sections {sorted(read - set(sections))} that the "
                                   f"script does not log (run_stage sections {sections}): update one of them")


def test_leaf_keys_and_covers():
    assert "generate.num_images" in leaf_keys("generate")  # a key params.yaml leaves to the preset
    assert "evaluate.cmmd.sigma" in leaf_keys("evaluate") and "evaluate.cmmd" not in leaf_keys("evaluate")
    assert leaf_keys("model.preset") == {"model.preset"}
    assert covers("generate", "generate.num_images") and covers("generate.seed", "generate.seed")
    assert not covers("generate.seed", "generate.seed_offset")
