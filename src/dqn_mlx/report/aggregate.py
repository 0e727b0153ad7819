"""Scores over several runs and games, as the field reports them since Agarwal et al. (NeurIPS
2021, "Deep RL at the Edge of the Statistical Precipice", whose library is rliable):

- per game, the mean over runs with its 95% bootstrap interval (the runs resampled);
- over games, the interquartile mean (IQM: the mean of the middle half of every (game, run)
  human-normalised score) and the median of the games' means, each with its 95% *stratified*
  bootstrap interval: the runs of each game resampled with replacement, the games fixed;
- the performance profile: the fraction of (game, run) scores above each threshold.

rliable pools a full (runs x games) matrix, so every game weighs the same there. While some
games have more runs than others (a campaign of seeds half done), pooling them as they are
would let those games outweigh the rest; ``equal_game_weight`` repeats each game's runs to a
common count first, which changes nothing once every game has as many runs.

The statistics are scipy's: ``stats.bootstrap`` resamples each sample it is given on its own,
which with one sample per game is the stratified bootstrap, and ``stats.trim_mean`` is the IQM.
Intervals are percentile intervals, as rliable's, from a fixed generator, so that a report
written twice reads the same. A game with a single run has no spread to resample: its estimate
has no interval, and neither has an aggregate over it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 50_000  # rliable's examples' count
BOOTSTRAP_SEED = 0
Statistic = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A point estimate over ``runs`` runs, with its interval (None with a single run of a
    game: nothing to resample)."""

    value: float
    low: float | None
    high: float | None
    runs: int

    def __str__(self) -> str:
        return self.text("{:.1f}")

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (a fraction as a percentage)."""
        low, high = (None if v is None else factor * v for v in (self.low, self.high))
        return Estimate(factor * self.value, low, high, self.runs)

    def text(self, form: str) -> str:
        """'12.3 [10.1, 14.0]', each number in ``form``; the value alone without an interval."""
        if self.low is None or self.high is None:
            return form.format(self.value)
        return f"{form.format(self.value)} [{form.format(self.low)}, {form.format(self.high)}]"


def equal_game_weight(*games: np.ndarray, axis: int = -1) -> np.ndarray:
    """Every (game, run) score pooled along ``axis``, each game's runs repeated to the least
    common multiple of the games' run counts, so that each game weighs the same in the pool
    (as in rliable's runs x games matrix) whatever its number of runs."""
    common = math.lcm(*(np.shape(runs)[axis] for runs in games))
    return np.concatenate(
        [np.repeat(runs, common // np.shape(runs)[axis], axis=axis) for runs in games], axis=axis
    )


def interquartile_mean(*games: np.ndarray, axis: int = -1) -> np.ndarray:
    """The IQM of every (game, run) score: the games' runs pooled with equal weight per game,
    the lowest and the highest quarter cut (``scipy.stats.trim_mean(pooled, 0.25)``, as
    rliable's ``aggregate_iqm``)."""
    from scipy import stats

    return np.asarray(stats.trim_mean(equal_game_weight(*games, axis=axis), 0.25, axis=axis))


def median_of_means(*games: np.ndarray, axis: int = -1) -> np.ndarray:
    """The median over games of each game's mean over its runs (rliable's
    ``aggregate_median``)."""
    means = np.stack([np.mean(runs, axis=axis) for runs in games], axis=-1)
    return np.asarray(np.median(means, axis=-1))


def mean_of_runs(runs: np.ndarray, axis: int = -1) -> np.ndarray:
    """One game's mean over its runs."""
    return np.asarray(np.mean(runs, axis=axis))


def estimate(games: Sequence[Sequence[float]], statistic: Statistic) -> Estimate:
    """``statistic`` of the games' runs (one sequence of run scores a game), with its 95%
    stratified-bootstrap percentile interval where every game has two runs or more."""
    from scipy import stats

    samples = [np.asarray(runs, dtype=float) for runs in games]
    if not samples or min(len(runs) for runs in samples) < 1:
        raise ValueError("every game needs at least one run")
    value = float(statistic(*samples))
    runs = sum(len(sample) for sample in samples)
    if min(len(sample) for sample in samples) < 2:
        return Estimate(value, None, None, runs)
    interval = stats.bootstrap(
        samples,
        statistic,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    ).confidence_interval
    return Estimate(value, float(interval.low), float(interval.high), runs)


def game_mean(runs: Sequence[float]) -> Estimate:
    """One game's mean over its runs, with its 95% bootstrap interval."""
    return estimate([runs], mean_of_runs)


def aggregates(games: Sequence[Sequence[float]]) -> tuple[Estimate, Estimate]:
    """The IQM and the median of the games' human-normalised scores, each with its interval."""
    return estimate(games, interquartile_mean), estimate(games, median_of_means)


def performance_profile(
    games: Sequence[Sequence[float]], thresholds: Sequence[float] | np.ndarray
) -> np.ndarray:
    """For each threshold, the fraction of the (game, run) scores above it, each game weighing
    the same (``equal_game_weight``): the mean over games of the fraction of its runs above."""
    pooled = equal_game_weight(*(np.asarray(runs, dtype=float) for runs in games))
    return np.array([float(np.mean(pooled > tau)) for tau in thresholds])
