"""The chapter-5 studies: the shipped grids are valid, expand to the right `dvc exp run` calls, and
report `dvc exp show --json` figures as they are (the end-to-end run is in test_dvc_pipeline.py)."""

import json

import pytest
import yaml

from ditcompress.study import (
    STUDIES, StudyError, finished_experiments, get_study, load_studies, metric, queue_study, report_study,
    twin_experiments, worker_env,
)

from .shrunk import REPO

THESIS_STUDIES = {"criteria", "selection", "schedule", "kd-loss", "protocol", "strategy", "svd-parts", "svd-schedule"}


def test_the_shipped_file_holds_the_eight_studies_with_valid_keys():
    studies = load_studies(REPO / STUDIES)
    assert set(studies) == THESIS_STUDIES
    kd = studies["kd-loss"]
    assert [n for n, _ in kd.points()][4:7] == ["kd-loss-normalized-hybrid-s0", "kd-loss-out-s1", "kd-loss-standard-s1"]
    assert len(kd.points()) == 5 * 2
    assert dict(kd.points())["kd-loss-normalized-hybrid-s1"] == {
        "distill.steps.global": 1500, "distill.loss": "normalized_hybrid", "distill.seed": 1}
    # a study that varies distill.* must not also rerun the schedule stage, which reads distill too
    assert kd.stages == ["evaluate"] and studies["schedule"].stages == ["schedule"]


def _file(tmp_path, body: str):
    path = tmp_path / "studies.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(("body", "message"), [
    ("s:\n  thesis: x\n  about: y\n  grid: {distill.los: [out]}\n",
     r"^.*studies.yaml: study 's': 'distill.los' is not a params.yaml key \('los' is not a field of distill\)$"),
    ("s:\n  thesis: x\n  about: y\n  set: {seed.x: 1}\n", r"^.*study 's': 'seed.x': seed has no sub-keys$"),
    ("s:\n  thesis: x\n  about: y\n  gird: {}\n", r"^.*study 's': .*unexpected keyword argument 'gird'$"),
])
def test_bad_grids_are_one_line_errors(tmp_path, body, message):
    with pytest.raises(StudyError, match=message):
        load_studies(_file(tmp_path, body))


def test_a_target_that_is_not_a_stage_is_a_one_line_error(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages:\n  score: {cmd: x}\n  evaluate: {cmd: y}\n")
    path = tmp_path / "configs" / "studies.yaml"
    path.write_text("s:\n  thesis: x\n  about: y\n  stages: [evaluate, distil]\n")
    with pytest.raises(StudyError, match=r"^.*study 's': stage 'distil' is not in dvc.yaml \(stages: score, evaluate\)$"):
        load_studies(path)
    path.write_text("s:\n  thesis: x\n  about: y\n  stages: [evaluate]\n")
    assert load_studies(path)["s"].stages == ["evaluate"]


def test_unknown_study_and_dict_sub_keys(tmp_path):
    path = _file(tmp_path, "s:\n  thesis: x\n  about: y\n  set: {distill.steps.global: 10, distill.weights.task: 0.5}\n")
    assert get_study("s", path).points() == [("s-s0", {"distill.steps.global": 10, "distill.weights.task": 0.5,
                                                        "seed": 0})]
    with pytest.raises(StudyError, match=r"^unknown study 'kd' \(known: s\)$"):
        get_study("kd", path)


def test_a_listed_experiment_may_name_its_own_seeds(tmp_path):
    path = _file(tmp_path, "s:\n  thesis: x\n  about: y\n  grid: {distill.loss: [out]}\n  seeds: [0, 1]\n"
                           "  experiments: {a: {distill.steps.global: 5, seeds: [2]}, b: {distill.steps.local: 3, seeds: [1]}}\n")
    study = get_study("s", path)
    assert study.points() == [("s-out-s0", {"distill.loss": "out", "seed": 0}),
                              ("s-out-s1", {"distill.loss": "out", "seed": 1}),
                              ("s-b-s1", {"distill.steps.local": 3, "seed": 1}),
                              ("s-a-s2", {"distill.steps.global": 5, "seed": 2})]
    assert study.label("s-a-s2") == "a"


def test_queue_study_runs_one_dvc_exp_per_point_then_starts_the_queue(tmp_path):
    path = _file(tmp_path, "s:\n  thesis: x\n  about: y\n  grid: {distill.loss: [out, normalized_hybrid]}\n"
                           "  experiments: {svd: {compress.blocks: ['0', '1'], score.selection.target: null}}\n"
                           "  seed_key: distill.seed\n  stages: [evaluate]\n")
    calls = []
    names, _ = queue_study(get_study("s", path), jobs=2, runner=lambda cmd, check, env=None: calls.append(cmd))
    assert names == ["s-out-s0", "s-normalized-hybrid-s0", "s-svd-s0"]
    assert calls == [
        ["dvc", "exp", "run", "--queue", "-n", "s-out-s0", "-S", "++distill.loss=out", "-S", "++distill.seed=0", "evaluate"],
        ["dvc", "exp", "run", "--queue", "-n", "s-normalized-hybrid-s0", "-S", "++distill.loss=normalized_hybrid",
         "-S", "++distill.seed=0", "evaluate"],
        ["dvc", "exp", "run", "--queue", "-n", "s-svd-s0", "-S", "++compress.blocks=['0', '1']",
         "-S", "++score.selection.target=null", "-S", "++distill.seed=0", "evaluate"],
        ["dvc", "queue", "start", "-j", "2"],
    ]


def test_queue_workers_split_the_cores_between_the_jobs_unless_told():
    assert worker_env(2, cores=2, environ={})["OMP_NUM_THREADS"] == "1"
    assert worker_env(3, cores=16, environ={})["MKL_NUM_THREADS"] == "5"
    assert worker_env(4, cores=2, environ={})["OMP_NUM_THREADS"] == "1"  # never 0
    assert worker_env(2, cores=2, environ={"OMP_NUM_THREADS": "2", "PATH": "/x"}) == {
        "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "1", "PATH": "/x"}


def _show(exps: dict[str, dict]) -> list[dict]:
    """A `dvc exp show --json` document holding these finished experiments' metrics files, one queued and one
    running (which DVC shows with the workspace's metrics). `kd-<loss>-s<seed>` has params.yaml
    {distill: {loss}, seed}, like the workspace's with loss `none`."""
    def entry(name, state, rev, metrics):
        _, loss, seed = name.split("-")
        data = {"rev": rev, "metrics": {f"metrics/{f}": {"data": d} for f, d in metrics.items()},
                "params": {"params.yaml": {"data": {"distill": {"loss": loss}, "seed": int(seed[1:])}}}}
        return {"executor": state and {"state": state}, "name": name, "revs": [{"rev": rev, "name": name, "data": data}]}

    workspace = {"evaluate.json": {"distilled": {"geneval/overall": 0.9}}}
    experiments = [entry(name, "success" if i % 2 else None, f"r{i}", m) for i, (name, m) in enumerate(exps.items())]
    experiments += [entry("kd-out-s9", "queued", "q", {}), entry("kd-standard-s1", "running", "workspace", workspace)]
    base = {"params": {"params.yaml": {"data": {"distill": {"loss": "none"}, "seed": 0}}}}
    return [{"rev": "workspace", "data": base}, {"rev": "b", "name": "main", "experiments": experiments}]


def test_report_is_the_mean_and_half_range_over_seeds(tmp_path):
    path = _file(tmp_path, "kd:\n  thesis: fig 5.11\n  about: losses\n  grid: {distill.loss: [out, standard]}\n"
                           "  seeds: [0, 1]\n  report:\n    metrics: [evaluate.json:distilled.geneval/overall]\n")
    show = _show({"kd-out-s0": {"evaluate.json": {"distilled": {"geneval/overall": 0.8}}},
                  "kd-out-s1": {"evaluate.json": {"distilled": {"geneval/overall": 0.7}}},
                  "kd-standard-s0": {"evaluate.json": {"distilled": {"geneval/overall": 0.75}}},
                  "other-x-s0": {"evaluate.json": {"distilled": {"geneval/overall": 0.1}}}})
    assert set(finished_experiments(show, "kd-")) == {"kd-out-s0", "kd-out-s1", "kd-standard-s0"}
    md, png = report_study(get_study("kd", path), show, tmp_path / "results")
    rows = [line for line in md.read_text().splitlines() if line.startswith("| out") or line.startswith("| standard")]
    assert rows == ["| out | 2 | 0.75 ± 0.05 |", "| standard | 1 | 0.75 |"]
    assert png.stat().st_size > 0
    with pytest.raises(StudyError, match=r"^report kd: no finished experiment named kd-\* in dvc exp show"):
        report_study(get_study("kd", path), _show({}), tmp_path / "results")


def test_metric_paths_reach_keys_with_slashes_and_dots():
    metrics = {"evaluate.json": {"distilled": {"geneval/overall": 0.5, "params": 3}},
               "score.json": {"spearman": {"rank_sum": -0.25}}, "distill.json": {"seconds": 12.0, "kind": "x"}}
    assert metric(metrics, "evaluate.json:distilled.geneval/overall") == 0.5
    assert metric(metrics, "score.json:spearman.rank_sum") == -0.25
    assert metric(metrics, "distill.json:seconds") == 12.0
    assert metric(metrics, "distill.json:kind") is None and metric(metrics, "nope.json:x") is None
    assert json.loads(json.dumps(metrics)) == metrics  # untouched


@pytest.mark.parametrize("name", sorted(THESIS_STUDIES))
def test_every_shipped_override_applies_to_params_yaml_through_dvc(tmp_path, name):
    """DVC's own Hydra parser takes every point's `-S` arguments and sets exactly the asked values
    (keys params.yaml leaves to the preset, like distill.steps.global, included)."""
    from dvc.utils.hydra import apply_overrides

    from ditcompress.study import _override

    for point, over in get_study(name, REPO / STUDIES).points():
        params = tmp_path / f"{point}.yaml"
        params.write_text((REPO / "params.yaml").read_text())
        apply_overrides(params, [_override(k, v) for k, v in over.items()])
        data = yaml.safe_load(params.read_text())
        for key, value in over.items():
            node = data
            for part in key.split("."):
                node = node[part]
            assert node == value, (point, key)


def test_a_study_refuses_to_start_before_the_baseline_is_cached(tmp_path):
    """`dvc status --json` of a fresh clone: the outputs not in the cache are named in one line."""
    from ditcompress.study import check_cache, not_in_cache

    status = {"shapes_data": [{"changed outs": {"data/shapes": "not in cache"}}],
              "pretrain": [{"changed deps": {"data/shapes": "deleted"}}],
              "schedule": [{"changed deps": {"src/ditcompress/schedule": "modified"}},
                           {"changed outs": {"plots/schedule": "not in cache", "data/schedule": "deleted"}}]}
    assert not_in_cache(status) == ["data/shapes", "plots/schedule"]
    study = get_study("kd-loss", REPO / STUDIES)
    with pytest.raises(StudyError, match=r"^study kd-loss: data/shapes, plots/schedule not in the DVC cache; "
                                         r"run `dvc repro` \(make repro\) first"):
        check_cache(study, status)
    check_cache(study, {"schedule": [{"changed deps": {"src/ditcompress/schedule": "modified"}}]})  # code edits: fine
    check_cache(study, {})


def test_a_point_already_measured_under_another_name_stands_in_for_it(tmp_path):
    """kd-loss's default loss is protocol's default protocol: equal params.yaml, one run, both reports."""
    path = _file(tmp_path, "kd:\n  thesis: fig 5.11\n  about: losses\n  grid: {distill.loss: [out, standard]}\n"
                           "  set: {distill.steps.global: 9}\n  seeds: [0, 1]\n  seed_key: distill.seed\n"
                           "  report:\n    metrics: [evaluate.json:distilled.geneval/overall]\n")
    base = {"distill": {"loss": "standard", "seed": 0}, "seed": 3}

    def exp(name, params, geneval):
        data = {"params": {"params.yaml": {"data": params}},
                "metrics": {"metrics/evaluate.json": {"data": {"distilled": {"geneval/overall": geneval}}}}}
        return {"executor": None, "name": name, "revs": [{"rev": name, "name": name, "data": data}]}

    show = [{"rev": "workspace", "data": {"params": {"params.yaml": {"data": base}}}},
            {"rev": "b", "experiments": [
                exp("kd-out-s0", {"distill": {"loss": "out", "seed": 0, "steps": {"global": 9}}, "seed": 3}, 0.5),
                exp("kd-standard-s0", {"distill": {"loss": "standard", "seed": 0, "steps": {"global": 9}}, "seed": 3}, 0.6),
                # the same params as kd-standard-s1 (and as kd-out-s1 but for the loss)
                exp("proto-default-s1", {"distill": {"loss": "standard", "seed": 1, "steps": {"global": 9}}, "seed": 3}, 0.8),
                exp("longer-s1", {"distill": {"loss": "out", "seed": 1, "steps": {"global": 10}}, "seed": 3}, 0.1)]}]
    study = get_study("kd", path)
    found = finished_experiments(show, "kd-")
    assert twin_experiments(study, show, set(found)) == {"kd-standard-s1": "proto-default-s1"}
    # and it is not queued again (queue_study skips it, a running or queued twin included)
    show[1]["experiments"][2]["executor"] = {"state": "queued"}
    calls = []
    names, twins = queue_study(study, None, runner=lambda cmd, check: calls.append(cmd), show=show)
    assert twins == {"kd-out-s0": "kd-out-s0", "kd-standard-s0": "kd-standard-s0", "kd-standard-s1": "proto-default-s1"}
    assert names == ["kd-out-s1"] and len(calls) == 1  # a second call carries on where the first stopped
    show[1]["experiments"][2]["executor"] = None
    md, _ = report_study(study, show, tmp_path / "results")
    text = md.read_text()
    assert "kd-standard-s1 = proto-default-s1" in text
    assert "| standard | 2 | 0.7 ± 0.1 |" in text and "| out | 1 | 0.5 |" in text


def test_the_report_takes_each_point_by_params_and_the_baseline_when_current(tmp_path):
    """An experiment left under a point's name by an older version of the study is not reported; a point equal
    to the workspace is the baseline's `dvc repro`, if its outputs are those of its params (`baseline_current`)."""
    path = _file(tmp_path, "kd:\n  thesis: x\n  about: y\n  grid: {distill.loss: [out, none]}\n"
                           "  report:\n    metrics: [evaluate.json:distilled.geneval/overall]\n")
    show = _show({"kd-out-s0": {"evaluate.json": {"distilled": {"geneval/overall": 0.8}}}})
    show[0]["data"]["metrics"] = {"metrics/evaluate.json": {"data": {"distilled": {"geneval/overall": 0.6}}}}
    stale = show[1]["experiments"][0]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    study = get_study("kd", path)
    assert twin_experiments(study, show, set(), baseline=True) == {"kd-out-s0": "kd-out-s0", "kd-none-s0": "workspace"}
    assert twin_experiments(study, show, set()) == {"kd-out-s0": "kd-out-s0"}
    md, _ = report_study(study, show, tmp_path / "results", baseline=True)
    text = md.read_text()
    assert "| none | 1 | 0.6 |" in text and "| out | 1 | 0.8 |" in text and "kd-none-s0 = workspace" in text
    calls = []
    names, _ = queue_study(study, None, runner=lambda cmd, check: calls.append(cmd), show=show, baseline=True)
    assert names == [] and calls == []
    stale["distill"]["steps"] = {"global": 7}  # kd-out-s0 ran with params the study no longer has
    md, _ = report_study(study, show, tmp_path / "results", baseline=True)
    assert "| out |" not in md.read_text()
    with pytest.raises(StudyError, match=r"^report kd: no finished experiment"):
        report_study(study, show, tmp_path / "results")


def test_the_baseline_is_current_unless_a_stage_s_params_changed():
    from ditcompress.study import baseline_current

    assert baseline_current({})
    assert baseline_current({"schedule": [{"changed deps": {"src/ditcompress/schedule": "modified"}}]})
    assert not baseline_current({"distill": [{"changed deps": {"params.yaml": {"distill.seed": "modified"}}}]})


class _Run:
    def __init__(self, run_id, status="FINISHED", params=None, metrics=None, parent=None):
        self.info = type("Info", (), {"run_id": run_id, "status": status})()
        self.data = type("Data", (), {"params": params or {}, "metrics": metrics or {}})()
        self.parent = parent


def test_schedule_curves_join_one_shot_runs_per_seed():
    """One line per progressive experiment; the one-shot runs of one seed make one line, with the teacher."""
    from ditcompress.schedule.report import schedule_curves

    stages, rounds = {}, []
    for name, kind, kept in [("p-s0", "progressive", [0.9, 0.8]), ("o1-s0", "one_shot", [0.9]),
                             ("o2-s0", "one_shot", [0.8]), ("o2-s1", "one_shot", [0.8])]:
        stages[name] = _Run(name, params={"schedule.kind": kind}, metrics={"teacher_geneval": 0.9})
        rounds += [_Run(f"{name}/{k}", parent=name, metrics={"round": k, "kept_fraction": f, "params": 10 * f,
                                                             "steps": 5.0, "geneval": f - 0.1})
                   for k, f in enumerate(kept, 1)]

    class Client:
        def search_runs(self, _, query, order_by=None):
            if "dvc.exp_name" in query:
                return [stages[query.split("'")[1]]]
            return [r for r in rounds if r.parent == query.split("'")[1]]

    names = {"progressive-s0": "p-s0", "oneshot-1-s0": "o1-s0", "oneshot-2-s0": "o2-s0", "oneshot-2-s1": "o2-s1"}
    lines, table = schedule_curves(Client(), "1", names)
    assert {k: [(r["kept_fraction"], r["steps"]) for r in v] for k, v in lines.items()} == {
        "progressive-s0": [(1.0, 0.0), (0.9, 5.0), (0.8, 10.0)],
        "one_shot-s0": [(1.0, 0.0), (0.9, 5.0), (0.8, 5.0)],
        "one_shot-s1": [(1.0, 0.0), (0.8, 5.0)]}
    assert lines["one_shot-s0"][0]["geneval"] == 0.9 and len(table) == 5
