"""Evaluation: the greedy policy follows the weights as they change, a step budget that ends
no game scores 0, the games of one evaluation start apart, and ``--mode eval``'s progress."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from catch_env import CatchEnv
from compute import COMPUTE

from dqn_mlx.core.env import Step
from dqn_mlx.core.network import PLAIN, QNetwork
from dqn_mlx.core.policy import greedy_policy
from dqn_mlx.evaluate import PROGRESS_LINE_S, EvalProgress, play_episodes, play_steps


@pytest.mark.parametrize("layers", [PLAIN, COMPUTE.layers], ids=["mlx", "platform"])
def test_greedy_policy_takes_the_argmax_and_follows_weight_updates(layers: object) -> None:
    """The greedy policy: argmax of the network's Q-values, following the weights as they
    change (it is a compiled function whose state is the network's parameters)."""
    mx.random.seed(0)
    network = QNetwork(4, "nips2013", layers=layers)  # type: ignore[arg-type]
    state = np.random.default_rng(0).integers(0, 256, (4, 84, 84), dtype=np.uint8)
    act = greedy_policy(network)
    expected = int(np.argmax(np.array(network(mx.array(state[None])))[0]))
    assert act(state) == expected

    for favoured in (2, 3, 0):  # replace the head's bias, as a weight update would
        bias = np.zeros(4, dtype=np.float32)
        bias[favoured] = 1e3
        network.update({"head": {"bias": mx.array(bias)}})
        assert act(state) == favoured


def test_a_step_budget_with_no_finished_game_scores_zero_as_deepmind_does() -> None:
    """run_gpu divides the completed games' total by max(1, games): 0 when none ended. The
    cut-off game's score is kept apart, never reported as the mean."""
    always_right = lambda state: 2  # noqa: E731 - the paddle runs right; Catch games last 10 steps
    cut = play_steps(CatchEnv(0), always_right, 4, agent_steps=5, seed=1)
    assert (cut.scores, cut.mean, cut.completed, cut.agent_steps) == ([], 0.0, False, 5)
    assert cut.unfinished_score == 0.0  # Catch rewards only the last step
    full = play_steps(CatchEnv(0), always_right, 4, agent_steps=25, seed=1)
    assert len(full.scores) == 2 and full.completed  # the third game, cut at 5 steps, is out
    assert full.mean == np.mean(full.scores)


def test_the_games_of_one_evaluation_start_differently() -> None:
    """Each game of an evaluation starts after its own draw of no-op frames (ale-py's, at
    each automatic reset), so that its games are independent draws: played with one fixed
    action, so that nothing else differs, five games of real Breakout open on five different
    sequences of frames. (Beam Rider's two games that both scored 1092 were two different
    games, of 4,070 and 5,412 agent steps: its scores come in steps of 48.)"""
    from dqn_mlx.core.env import make_atari_env

    env = make_atari_env("BreakoutNoFrameskip-v4", 4, 30, 108_000, seed=7)
    openings: list[bytes] = []
    frames: list[np.ndarray] = []

    def observe(episode: int, step: Step) -> None:
        frames.append(step.frame.copy())
        if step.game_over or step.truncated:
            openings.append(np.stack(frames[:20]).tobytes())
            frames.clear()

    result = play_episodes(env, lambda state: 0, 4, episodes=5, seed=7, observer=observe)
    assert len(result.scores) == len(openings) == 5
    assert len(set(openings)) == 5


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _step(over: bool = False, reward: float = 0.0) -> Step:
    return Step(np.zeros((84, 84), np.uint8), reward, over, False, over)


def test_eval_progress_shows_each_game_and_a_line_while_a_long_one_plays() -> None:
    """Four games: each game's end is a line with the scores so far and an ETA counted from
    the games' mean time; a game that plays on gets a line every PROGRESS_LINE_S."""
    lines: list[str] = []
    clock = Clock()
    progress = EvalProgress(4, None, live=False, log=lines.append, clock=clock)
    for score in (3.0, 5.0):  # two games of 10 s, 80 agent steps each
        for n in range(80):
            clock.now += 0.125
            progress(0, _step(over=n == 79, reward=score if n == 50 else 0.0))
    assert lines == [
        "game 1/4: score 3 in 80 agent steps | scores so far 3 (mean 3.0) | 80 agent steps in "
        "10s, ETA 30s",
        "game 2/4: score 5 in 80 agent steps | scores so far 3, 5 (mean 4.0) | 160 agent steps "
        "in 20s, ETA 20s",
    ]
    for _ in range(round(PROGRESS_LINE_S / 0.125)):  # the third game plays on, 1/8 s a step
        clock.now += 0.125
        progress(0, _step(reward=1.0))
    assert len(lines) == 3 and lines[-1].startswith("game 3/4: 240 agent steps, score 240 so far")
    assert lines[-1].endswith("400 agent steps in 50s, ETA 0s")  # it outlasted its estimate


def test_eval_progress_counts_one_agent_step_in_the_singular_and_a_budget_after_the_count() -> None:
    lines: list[str] = []
    clock = Clock()
    progress = EvalProgress(None, 1_000, live=False, log=lines.append, clock=clock)
    clock.now += 1.0
    progress(0, _step(over=True, reward=2.0))
    assert lines[0].startswith("game 1: score 2 in 1 agent step | ")
    assert "| 1/1,000 agent steps in " in lines[0]
