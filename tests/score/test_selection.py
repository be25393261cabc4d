"""Selection algorithms on synthetic objectives whose optimum is known (no model, no renders)."""

from itertools import combinations

import pytest

from ditcompress.errors import UserError
from ditcompress.score.probe import Measurement
from ditcompress.score.selection import (
    check_blocks,
    check_k,
    exhaustive,
    greedy,
    optuna_search,
    ranking,
)

BLOCKS = [str(i) for i in range(8)]
COST = {"0": 1.0, "1": 1.2, "2": 1.3, "3": 10.0, "4": 10.5, "5": 11.0, "6": 12.0, "7": 13.0}
PENALTY = {frozenset({"0", "1"}): 5.0, frozenset({"0", "2"}): 5.0}  # 0 looks best alone but clashes
PARAMS = 10  # parameters each block removes


class Objective:
    """CMMD = Σ cost + Σ pair penalties; CLIP score falls as CMMD rises; counts its calls."""

    def __init__(self, cost=COST, penalty=PENALTY):
        self.cost, self.penalty, self.calls = cost, penalty, []

    def value(self, subset) -> float:
        s = set(subset)
        return sum(self.cost[b] for b in s) + sum(v for pair, v in self.penalty.items() if pair <= s)

    def __call__(self, subset) -> Measurement:
        self.calls.append(tuple(subset))
        v = self.value(subset)
        return Measurement(cmmd=v, clip_score=100 - v, removed_params=PARAMS * len(set(subset)))


def true_best(objective, k):
    return min(combinations(BLOCKS, k), key=objective.value)


def test_greedy_on_an_additive_objective_is_optimal():
    objective = Objective(penalty={})
    result = greedy(BLOCKS, objective, criterion="cmmd", k=3)
    assert result.blocks == ["0", "1", "2"] and result.stopped == "k"
    assert result.cmmd == pytest.approx(3.5)
    assert [it["block"] for it in result.iterations] == ["0", "1", "2"]
    assert set(result.iterations[1]["candidates"]) == set(BLOCKS) - {"0"}  # re-scored without the chosen one


def test_greedy_is_trapped_where_the_exhaustive_oracle_is_not():
    objective = Objective()
    g = greedy(BLOCKS, objective, criterion="rank_sum", k=2)
    assert g.blocks == ["0", "1"] and g.cmmd == pytest.approx(7.2)
    oracle = exhaustive(BLOCKS, objective, 2, max_subsets=28)
    assert sorted(oracle.blocks) == sorted(true_best(objective, 2)) == ["1", "2"]
    assert oracle.cmmd == pytest.approx(2.5) and len(oracle.trials) == 28


def test_greedy_stops_at_target_threshold_or_when_no_block_is_left():
    objective = Objective(penalty={})
    total = PARAMS * len(BLOCKS) * 2  # blocks are half of the model
    by_target = greedy(BLOCKS, objective, criterion="cmmd", k=None, total_params=total, target=0.8)
    assert by_target.stopped == "target" and len(by_target.blocks) == 4  # 1 - 40/160 = 0.75 <= 0.8
    by_cmmd = greedy(BLOCKS, objective, criterion="cmmd", k=None, cmmd_threshold=10.0)
    # cumulative 1, 2.2, 3.5, 13.5: the block that reaches the threshold is included
    assert by_cmmd.stopped == "cmmd_threshold" and by_cmmd.blocks == ["0", "1", "2", "3"]
    never = greedy(BLOCKS, objective, criterion="cmmd", k=None, cmmd_threshold=1e9)
    assert never.stopped == "no candidates left" and len(never.blocks) == len(BLOCKS) - 1  # one block must remain
    with pytest.raises(UserError, match="needs a stop"):
        greedy(BLOCKS, objective)


def test_greedy_by_cmmd_per_parameter_prefers_cheap_damage_per_removed_parameter():
    params = {b: 10 for b in BLOCKS} | {"3": 1000}  # block 3 hurts 10x more but removes 100x more

    def measure(subset):
        v = Objective(penalty={}).value(subset)
        return Measurement(v, 100 - v, sum(params[b] for b in subset))

    assert greedy(BLOCKS, measure, criterion="cmmd_per_param", k=1).blocks == ["3"]
    assert greedy(BLOCKS, measure, criterion="cmmd", k=1).blocks == ["0"]


def test_optuna_starts_from_the_greedy_prior_and_is_never_worse(tmp_path):
    prior = greedy(BLOCKS, Objective(), criterion="rank_sum", k=2)
    objective = Objective()
    result = optuna_search(BLOCKS, objective, 2, n_trials=15, seed=0, prior=prior.blocks)
    assert sorted(result.trials[0]["blocks"]) == sorted(prior.blocks)
    assert result.cmmd <= prior.cmmd
    assert result.cmmd == min(t["cmmd"] for t in result.trials) and len(result.trials) == 15
    assert all(len(set(t["blocks"])) == 2 for t in result.trials)  # every encoding is a valid subset
    # a subset is measured once: TPE's repeats are pruned, not rendered
    assert len({frozenset(t["blocks"]) for t in result.trials}) == len(result.trials)
    trial_calls = objective.calls[:-1]  # the last call re-measures the best
    assert len(set(map(frozenset, trial_calls))) == len(trial_calls) == len(result.trials)
    # asked for more trials than there are subsets: each of the C(8, 2) = 28 once, so the optimum
    full = optuna_search(BLOCKS, Objective(), 2, n_trials=100, seed=0, prior=prior.blocks)
    assert len(full.trials) == 28 and sorted(full.blocks) == sorted(true_best(Objective(), 2))


def test_optuna_resumes_a_killed_search_from_its_storage(tmp_path):
    objective = Objective()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = optuna_search(BLOCKS, objective, 3, n_trials=4, seed=1, prior=["0", "1", "2"], storage=storage)
    calls = len(objective.calls)
    resumed = optuna_search(BLOCKS, objective, 3, n_trials=10, seed=1, prior=["0", "1", "2"], storage=storage)
    assert len(first.trials) == 4 and resumed.trials[:4] == first.trials and len(resumed.trials) == 10
    assert len(objective.calls) - calls == len(resumed.trials) - 4 + 1  # only the missing trials, plus the best's
    assert len({frozenset(t["blocks"]) for t in resumed.trials}) == len(resumed.trials)


def test_ranking_takes_the_least_important():
    assert ranking({"a": 3.0, "b": 1.0, "c": 2.0}, 2) == ["b", "c"]


def test_bad_inputs_are_one_line_errors_naming_the_key():
    with pytest.raises(UserError, match=r"score.selection.max_subsets: exhaustive over C\(8, 4\) = 70"):
        exhaustive(BLOCKS, Objective(), 4, max_subsets=56)
    with pytest.raises(UserError, match="score.selection.k: 8 blocks of 8 means removing every block"):
        check_k(8, 8, "remove")
    check_k(8, 8, "svd")  # every block may be compressed
    with pytest.raises(UserError, match="score.selection.k: 9 blocks of 8"):
        check_k(9, 8, "svd")
    with pytest.raises(UserError, match="score.selection.blocks: unknown block id '12'"):
        check_blocks(["1", "12"], BLOCKS)
