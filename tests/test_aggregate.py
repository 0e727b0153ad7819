"""The report's statistics (``report/aggregate.py``) against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dqn_mlx.report.aggregate import (
    aggregates,
    equal_game_weight,
    game_mean,
    interquartile_mean,
    median_of_means,
    performance_profile,
)


def test_the_bootstrap_interval_of_two_runs_is_exact() -> None:
    """Runs 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the 2.5th
    and 97.5th percentiles are 0 and 1."""
    found = game_mean([0.0, 1.0])
    assert (found.value, found.low, found.high, found.runs) == (0.5, 0.0, 1.0, 2)


def test_the_bootstrap_interval_of_a_large_sample_is_the_normal_one() -> None:
    """Over 400 runs the mean's 95% interval is the mean ± 1.96 standard errors (central limit
    theorem), to within a few hundredths of a standard error."""
    runs = np.random.default_rng(7).normal(10.0, 3.0, 400)
    found = game_mean(list(runs))
    half = 1.96 * runs.std() / np.sqrt(len(runs))
    assert found.low == pytest.approx(runs.mean() - half, abs=0.05 * half)
    assert found.high == pytest.approx(runs.mean() + half, abs=0.05 * half)


def test_one_run_gives_a_value_and_no_interval() -> None:
    found = game_mean([3.0])
    assert (found.value, found.low, found.high) == (3.0, None, None)
    assert str(found) == "3.0" and str(game_mean([0.0, 1.0])) == "0.5 [0.0, 1.0]"
    iqm, median = aggregates([[0.5], [0.1, 0.2], [0.9, 1.0]])
    assert iqm.low is None and median.low is None and iqm.runs == 5


def test_the_iqm_pools_every_run_and_cuts_a_quarter_at_each_end() -> None:
    """Eight scores over two games: the middle four (3, 4, 5, 6) average 4.5; the median of the
    two games' means (2.5 and 6.5) is 4.5 too, and moves with a game's outlier where the IQM
    does not."""
    games = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0, 8.0])]
    assert float(interquartile_mean(*games)) == 4.5
    assert float(median_of_means(*games)) == 4.5
    games[1][-1] = 1000.0
    assert float(interquartile_mean(*games)) == 4.5
    assert float(median_of_means(*games)) > 100


def test_the_stratified_bootstrap_keeps_the_games_and_resamples_their_runs() -> None:
    """Games whose runs agree have no spread: only the one game whose runs differ moves the
    aggregate. With the other games fixed far apart, the median of the three means is the
    middle game's mean, so the median's interval is that game's own interval (0 to 1)."""
    games = [[-5.0, -5.0], [0.0, 1.0], [5.0, 5.0]]
    iqm, median = aggregates(games)
    assert (median.value, median.low, median.high) == (0.5, 0.0, 1.0)
    assert iqm.low is not None and iqm.high is not None
    assert iqm.low <= iqm.value <= iqm.high
    flat = aggregates([[2.0, 2.0], [3.0, 3.0]])[0]
    assert (flat.low, flat.high) == (flat.value, flat.value)


def test_dopamines_aggregates_are_the_published_reading() -> None:
    """Dopamine's 35 iteration-5 runs (its data file) give the IQM and interval that
    ../shared/reference/dqn-paper.md records: 0.49 (0.44-0.56), median 0.43."""
    from dqn_mlx.report.paper_scores import NATURE_2015, dopamine_scores

    games = []
    for rom, paper in NATURE_2015.items():
        runs = np.array(dopamine_scores(rom, 1_500_000))
        games.append((runs - paper["random"]) / (paper["human"] - paper["random"]))
    iqm, median = aggregates(games)
    assert (round(iqm.value, 2), round(median.value, 2), iqm.runs) == (0.49, 0.43, 35)
    assert iqm.low == pytest.approx(0.44, abs=0.01) and iqm.high == pytest.approx(0.56, abs=0.01)


def test_a_game_with_more_runs_weighs_no_more_than_the_others() -> None:
    """Games of 1, 2 and 3 runs pool to 6 scores each. Three runs that agree weigh what one run
    of that score would, so the IQM is that of one run a game: of 0, 10, 20 it is 10 (the pool
    of 18, 6 of each, cut 4 at each end, keeps 2 zeros, 6 tens and 2 twenties)."""
    assert list(equal_game_weight(np.array([1.0]), np.array([2.0, 3.0]))) == [1, 1, 2, 3]
    one_each = [np.array([0.0]), np.array([10.0]), np.array([20.0])]
    uneven = [np.array([0.0]), np.array([10.0, 10.0]), np.array([20.0, 20.0, 20.0])]
    assert float(interquartile_mean(*one_each)) == float(interquartile_mean(*uneven)) == 10.0
    assert float(stats.trim_mean(np.concatenate(uneven), 0.25)) > 10.0  # pooled as they are
    assert list(performance_profile([[0.0], [10.0, 10.0], [20.0, 20.0, 20.0]], [5.0, 15.0])) == [
        pytest.approx(2 / 3),
        pytest.approx(1 / 3),
    ]


def test_the_performance_profile_is_the_fraction_above_each_threshold() -> None:
    scores = [[0.1, 0.5, 0.5, 2.0]]
    assert list(performance_profile(scores, [0.0, 0.1, 0.5, 1.0, 3.0])) == [
        1.0,
        0.75,
        0.25,
        0.25,
        0.0,
    ]
