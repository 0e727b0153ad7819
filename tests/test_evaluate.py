"""The greedy policy: argmax of the network's Q-values, following the weights as they change
(it is a compiled function whose state is the network's parameters)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from dqn_mlx.evaluate import greedy_policy
from dqn_mlx.network import QNetwork


def test_greedy_policy_takes_the_argmax_and_follows_weight_updates() -> None:
    mx.random.seed(0)
    network = QNetwork(4, "nips2013")
    state = np.random.default_rng(0).integers(0, 256, (4, 84, 84), dtype=np.uint8)
    act = greedy_policy(network, mx.new_stream(mx.cpu))
    expected = int(np.argmax(np.array(network.predict(mx.array(state[None])))[0]))
    assert act(state) == expected

    for favoured in (2, 3, 0):  # replace the head's bias, as a weight update would
        bias = np.zeros(4, dtype=np.float32)
        bias[favoured] = 1e3
        network.update({"head": {"bias": mx.array(bias)}})
        assert act(state) == favoured
