"""The evaluation's scoring on hand-made rewards: Wilson intervals, pairwise and best-of-N accuracy,
RM-Bench's style matrix and difficulty levels, the length-bias report, the predictions file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reward_plugin.errors import ConfigError
from reward_plugin.evaluation.length_bias import length_bias_report, ranks
from reward_plugin.evaluation.prompts import (
    PromptRewards,
    best_of_n_accuracy,
    cross_product_sides,
    groups_from_pairs,
    pairwise_accuracy,
    write_predictions,
)
from reward_plugin.evaluation.rm_bench import difficulty_accuracies, prompt_domain, rm_bench_report
from reward_plugin.metrics import accuracy_estimate, wilson_interval


@pytest.mark.parametrize("successes,n", [(5, 10), (0, 7), (7, 7), (13, 14), (40, 129)])
def test_wilson_interval_solves_the_score_equation(successes, n):
    """The Wilson bounds are the p with |p_hat - p| = z sqrt(p (1 - p) / n): the roots of
    (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0, solved here with numpy.roots."""
    z = 1.959963984540054
    p_hat = successes / n
    roots = np.sort(np.roots([1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat]).real)
    low, high = wilson_interval(p_hat, n)
    assert low == pytest.approx(max(roots[0], 0.0), abs=1e-12)
    assert high == pytest.approx(min(roots[1], 1.0), abs=1e-12)


def test_wilson_interval_textbook_value_and_no_units():
    low, high = wilson_interval(0.5, 10)  # 5 of 10: 0.2366 .. 0.7634 in every reference table
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert all(np.isnan(wilson_interval(0.5, 0)))
    est = accuracy_estimate(0.75, 12, 4)
    assert est["count"] == 12 and est["prompts"] == 4 and est["ci95"] == list(wilson_interval(0.75, 4))


def test_pairwise_and_best_of_n_on_hand_made_rewards():
    groups = [
        # every chosen above every rejected: min chosen 2.0 > max rejected 1.9
        PromptRewards.bipartite([3.0, 2.0, 2.5], [1.0, 1.9, 0.0]),
        # one chosen, two rejected, ties with the second: a tie is wrong in both metrics
        PromptRewards.bipartite([3.0], [1.0, 3.0]),
        # RewardBench 2's usual shape: one chosen best of four
        PromptRewards.bipartite([5.0], [1.0, 2.0, 3.0]),
        # best chosen wins, worst chosen loses to one rejected: 5 of 6 pairs, best-of-N wrong
        PromptRewards.bipartite([4.0, 0.5], [0.0, 1.0, 0.2]),
    ]
    pairwise = pairwise_accuracy(groups)
    assert pairwise["count"] == 9 + 2 + 3 + 6 and pairwise["prompts"] == 4
    assert pairwise["accuracy"] == pytest.approx((9 + 1 + 3 + 5) / 20)
    best = best_of_n_accuracy(groups)
    assert best["count"] == best["prompts"] == 4
    assert best["accuracy"] == pytest.approx(2 / 4)
    assert best["ci95"] == list(wilson_interval(0.5, 4))
    assert best["n"] == [3, 4, 5, 6]


def test_cross_product_sides_with_merged_duplicates():
    # chosen style 1 has the text of style 0: stored once, so index 0 appears for both
    pairs = [(0, 2), (0, 3), (0, 4), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
    a, b = cross_product_sides(pairs)
    assert a.tolist() == [0, 0, 1] and b.tolist() == [2, 3, 4]
    group = PromptRewards([1.0, 2.0, 0.0, 0.5, 3.0], pairs)
    assert group.chosen.tolist() == [1.0, 1.0, 2.0] and group.rejected.tolist() == [0.0, 0.5, 3.0]
    # a ranking's all-pairs list is no cross product: chosen = never worse
    ranking = PromptRewards([3.0, 2.0, 1.0], [(0, 1), (0, 2), (1, 2)])
    assert cross_product_sides(ranking.pairs) is None
    assert ranking.chosen_index.tolist() == [0] and ranking.rejected_index.tolist() == [1, 2]
    assert pairwise_accuracy([ranking])["count"] == 3


def test_difficulty_levels_of_a_hand_written_matrix():
    matrix = [[0.9, 0.2, 0.1], [0.95, 0.8, 0.3], [1.0, 0.97, 0.7]]
    levels = difficulty_accuracies(matrix)
    assert levels["hard"] == pytest.approx((0.2 + 0.1 + 0.3) / 3)  # above the diagonal
    assert levels["normal"] == pytest.approx((0.9 + 0.8 + 0.7) / 3)
    assert levels["easy"] == pytest.approx((0.95 + 1.0 + 0.97) / 3)  # below the diagonal
    assert levels["average"] == pytest.approx(np.mean(matrix))


def test_rm_bench_matrix_from_rewards():
    # A style-biased model: reward = quality (chosen 1, rejected 0) + style bonus (0, 0.8, 1.6).
    # chosen i beats rejected j iff 1 + s_i > s_j: loses only concise vs markdown (i=0, j=2).
    bonus = np.array([0.0, 0.8, 1.6])
    biased = PromptRewards.bipartite(1 + bonus, bonus, meta={"subset": "alpacaeval"})
    # A model that is always wrong, with one tie (ties count as wrong).
    wrong = PromptRewards.bipartite([-0.2, -0.1, 0.0], [0.0, 1.0, 2.0], meta={"subset": "alpacaeval"})
    report = rm_bench_report([biased, wrong])
    chat = report["domains"]["chat"]
    expected = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 1]]) / 2
    np.testing.assert_allclose(chat["matrix"], expected)
    assert chat["hard"]["accuracy"] == pytest.approx(1 / 3)
    assert chat["normal"]["accuracy"] == pytest.approx(0.5)
    assert chat["easy"]["accuracy"] == pytest.approx(0.5)
    assert chat["average"]["accuracy"] == pytest.approx(4 / 9)
    assert chat["hard"]["count"] == 6 and chat["average"]["count"] == 18 and chat["prompts"] == 2
    assert report["hard"] == chat["hard"]  # one domain: the overall is the domain's
    assert report["styles"] == ["concise", "detailed_plain", "detailed_markdown"]


def test_rm_bench_overall_is_the_unweighted_mean_over_domains():
    perfect = PromptRewards.bipartite([5, 5, 5], [0, 0, 0], meta={"subset": "xstest-should-respond"})
    wrong = PromptRewards.bipartite([0, 0, 0], [5, 5, 5], meta={"subset": "alpacaeval"})
    report = rm_bench_report([perfect, wrong, wrong, wrong])
    assert list(report["domains"]) == ["chat", "safety"]
    assert report["domains"]["safety"]["easy"]["accuracy"] == 1.0
    assert report["domains"]["chat"]["easy"]["accuracy"] == 0.0
    for level in ("easy", "normal", "hard", "average"):  # (chat + safety) / 2, not 1 / 4 by prompts
        assert report[level]["accuracy"] == pytest.approx(0.5)
        assert report[level]["prompts"] == 4
    with pytest.raises(ConfigError, match="3 chosen and 3 rejected"):
        rm_bench_report([PromptRewards.bipartite([1.0], [0.0])])


def test_prompt_domain():
    assert prompt_domain({"domain": "safety-refuse"}) == "safety"
    assert prompt_domain({"subset": "bigcode/humanevalpack"}) == "code"
    assert prompt_domain({"subset": "something-new"}) == "something-new"
    assert prompt_domain({}) == "all"


def test_length_bias_of_a_pure_length_model():
    rng = np.random.default_rng(0)
    groups = []
    for _ in range(20):
        lengths = rng.integers(5, 200, size=6)
        groups.append(PromptRewards.bipartite(lengths[:3] / 10, lengths[3:] / 10, lengths[:3], lengths[3:]))
    report = length_bias_report(groups)
    assert report["by_sign"]["chosen_longer"]["accuracy"] == 1.0
    assert report["by_sign"]["chosen_shorter"]["accuracy"] == 0.0
    counts = sum(report["by_sign"][k]["count"] for k in report["by_sign"])
    assert counts == 20 * 9 == sum(b["count"] for b in report["by_length_difference"])
    assert report["correlation"]["pearson"] == pytest.approx(1.0)
    assert report["correlation"]["spearman"] == pytest.approx(1.0)
    assert report["correlation"]["within_prompt_pearson"] == pytest.approx(1.0)
    assert report["correlation"]["responses"] == 120
    for bucket in report["by_length_difference"]:
        assert bucket["prompts"] <= 20 and bucket["ci95"][0] <= bucket["accuracy"] <= bucket["ci95"][1]


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 6, 50), rng.normal(size=50)
    np.testing.assert_allclose(ranks(x), stats.rankdata(x))
    groups = [PromptRewards.bipartite([y[k]], [y[k + 25]], [x[k]], [x[k + 25]]) for k in range(25)]
    rho = length_bias_report(groups)["correlation"]["spearman"]
    assert rho == pytest.approx(
        stats.spearmanr(np.r_[y[:25], y[25:]], np.r_[x[:25], x[25:]]).statistic, abs=1e-12
    )


def test_predictions_file_one_line_per_prompt(tmp_path):
    groups = [
        PromptRewards.bipartite([1.0, 2.0, 3.0], [0.0, 0.5, 4.0], [3, 4, 5], [6, 7, 8], {"id": 7}),
        *groups_from_pairs([[0.25, -1.0]], [[10, 12]], [{"source_row": 3}]),
    ]
    path = write_predictions(groups, tmp_path / "p.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {
            "id": 7,
            "chosen_rewards": [1.0, 2.0, 3.0],
            "rejected_rewards": [0.0, 0.5, 4.0],
            "chosen_lengths": [3, 4, 5],
            "rejected_lengths": [6, 7, 8],
        },
        {
            "source_row": 3,
            "chosen_rewards": [0.25],
            "rejected_rewards": [-1.0],
            "chosen_lengths": [10],
            "rejected_lengths": [12],
        },
    ]


def test_reports_stay_strict_json_without_same_length_pairs_or_with_constant_lengths():
    from reward_plugin.evaluation import group_report

    groups = [PromptRewards.bipartite([1.0, 2.0], [0.0], [5, 5], [5]) for _ in range(3)]
    report = group_report(groups)
    bias = report["length_bias"]
    assert bias["by_sign"]["chosen_longer"] == {"accuracy": None, "count": 0, "prompts": 0, "ci95": None}
    assert bias["by_sign"]["same_length"]["count"] == 6
    assert bias["correlation"]["pearson"] is None  # every length is 5
    json.dumps(report, allow_nan=False)
