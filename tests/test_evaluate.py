"""The greedy policy: argmax of the network's Q-values, following the weights as they change
(it is a compiled function whose state is the network's parameters)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from catch_env import CatchEnv
from compute import COMPUTE

from dqn_mlx.core.network import PLAIN, QNetwork
from dqn_mlx.core.policy import greedy_policy
from dqn_mlx.evaluate import play_steps


@pytest.mark.parametrize("layers", [PLAIN, COMPUTE.layers], ids=["mlx", "platform"])
def test_greedy_policy_takes_the_argmax_and_follows_weight_updates(layers: object) -> None:
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
