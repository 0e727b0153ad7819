"""accel/numpy_actor.py: the numpy greedy action computes QNetwork.definition's function and
follows weight changes."""

from __future__ import annotations

import ctypes
import glob
import os
import sys

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from dqn_mlx.accel.numpy_actor import limit_numpy_blas_to_one_thread, numpy_greedy_policy, q_values
from dqn_mlx.core.network import DEFINITION, QNetwork


def _weights(network: QNetwork) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in tree_flatten(network.parameters())}


@pytest.mark.parametrize("architecture", ["nips2013", "nature2015"])
def test_q_values_equal_the_mlx_forward_pass(architecture: str) -> None:
    mx.random.seed(1)
    network = QNetwork(6, architecture, formulation=DEFINITION)
    # every parameter 3x its initial scale: ReLUs cut and the Q-values differ widely
    network.update(tree_map(lambda p: p * 3.0, network.parameters()))
    states = np.random.default_rng(1).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
    expected = np.array(network.predict(mx.array(states)))
    got = q_values(_weights(network), network.strides, states)  # one batched pass
    one_by_one = np.concatenate(
        [q_values(_weights(network), network.strides, s[None]) for s in states]
    )
    assert np.allclose(got, one_by_one, rtol=1e-4, atol=1e-5)
    assert got.shape == expected.shape == (8, 6)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.ptp(expected) > 1e-2  # the comparison is not between near-constant outputs


def test_policy_follows_replaced_weights() -> None:
    mx.random.seed(2)
    network = QNetwork(4, "nature2015", formulation=DEFINITION)
    act = numpy_greedy_policy(network)
    state = np.random.default_rng(2).integers(0, 256, (4, 84, 84), dtype=np.uint8)
    (first,) = act(state[None])
    assert first == int(np.argmax(np.array(network.predict(mx.array(state[None])))[0]))
    head_bias = np.full(4, -100.0, np.float32)
    head_bias[(first + 1) % 4] = 100.0  # make another action the best by far
    network.update({"head": {"bias": mx.array(head_bias)}})
    assert act(state[None])[0] == (first + 1) % 4


@pytest.mark.skipif(sys.platform != "linux", reason="numpy's Linux wheels bundle OpenBLAS")
def test_numpy_blas_is_made_single_threaded() -> None:
    assert limit_numpy_blas_to_one_thread()
    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    (path,) = glob.glob(os.path.join(folder, "*openblas*.so*"))
    assert ctypes.CDLL(path).scipy_openblas_get_num_threads64_() == 1
