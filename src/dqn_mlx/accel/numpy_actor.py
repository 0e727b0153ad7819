"""The greedy actions for a few observations, computed in numpy (CPU formulation's acting).

Acting takes one forward pass per agent step for a single observation: a job too small for
MLX's per-operation overhead. The same pass in numpy, on numpy's own OpenBLAS limited to one
thread, made the training loop faster than acting with compiled MLX (docs/linux-cpu.md).

``q_values`` computes ``QNetwork.definition``'s function from the network's named weights
(conv layers as im2col products, ReLU, the two linear layers); equal up to float rounding
(``tests/test_accel.py``). ``numpy_greedy_policy`` reads the network's current MLX weights
without copying them, so an action always comes from the newest weights.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dqn_mlx.core.network import QNetwork

_SET_THREADS_SYMBOLS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_")


def limit_numpy_blas_to_one_thread() -> bool:
    """Make numpy's bundled OpenBLAS single-threaded; True if it was found and set.

    Its second thread would spin for a while after every product (OpenBLAS's idle wait), on
    the core the update's own BLAS threads need. This touches only numpy's copy of OpenBLAS
    (``numpy.libs`` of a numpy wheel), not the one MLX computes with, for the whole process.
    A numpy built otherwise is left as it is: acting is then slower, not wrong."""
    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(folder, "*openblas*.so*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in _SET_THREADS_SYMBOLS:
            if hasattr(library, symbol):
                getattr(library, symbol)(1)
                return True
    return False


def _conv_relu(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """ReLU of a valid kxk stride-s convolution of NHWC images; weight (out, k, k, in)."""
    kernel = weight.shape[1]
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    n, rows, cols = windows.shape[:3]  # windows: (n, rows, cols, in, k, k)
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * rows * cols, -1)  # taps (k, k, in)
    y = patches @ weight.reshape(weight.shape[0], -1).T + bias
    return np.maximum(y, 0.0, out=y).reshape(n, rows, cols, -1)


def q_values(weights: dict[str, np.ndarray], strides: list[int], states: np.ndarray) -> np.ndarray:
    """Q(s, .) for uint8 stacks (n, history, 84, 84), from ``QNetwork``'s named weights."""
    x = states.transpose(0, 2, 3, 1).astype(np.float32) * np.float32(1.0 / 255.0)  # NHWC, [0, 1]
    for layer, stride in enumerate(strides):
        x = _conv_relu(x, weights[f"convs.{layer}.weight"], weights[f"convs.{layer}.bias"], stride)
    hidden = x.reshape(len(x), -1) @ weights["hidden.weight"].T + weights["hidden.bias"]
    return np.maximum(hidden, 0.0) @ weights["head.weight"].T + weights["head.bias"]


def _named_layers(network: QNetwork) -> list[tuple[str, Any]]:
    """The layers ``q_values`` reads, by the names their weights have in ``parameters()``."""
    convs = [(f"convs.{i}", conv) for i, conv in enumerate(network.convs)]
    return [*convs, ("hidden", network.hidden), ("head", network.head)]


def numpy_greedy_policy(network: QNetwork) -> Callable[[np.ndarray], np.ndarray]:
    """argmax_a Q(s, a) for a batch of stacks (n, history, 84, 84), with ``network``'s weights
    as they are at each call, in numpy: one pass for the n observations.

    The weights are read as numpy views of the MLX arrays (no copy) and kept, with the arrays
    they view, until the network's parameters are replaced (``network.update``). The check
    reads the layers' attributes directly: walking ``parameters()`` at every action cost more
    than the check itself."""
    limit_numpy_blas_to_one_thread()
    layers = _named_layers(network)
    held: list[mx.array] = []  # the MLX arrays the views below read: kept alive while in use
    weights: dict[str, np.ndarray] = {}

    def act(states: np.ndarray) -> np.ndarray:
        current = [array for _, layer in layers for array in (layer.weight, layer.bias)]
        unchanged = len(held) == len(current) and all(
            a is b for a, b in zip(current, held, strict=True)
        )
        if not unchanged:
            held[:] = current
            for name, layer in layers:
                for part in ("weight", "bias"):
                    view = np.asarray(getattr(layer, part))  # shares the MLX array's memory
                    view.setflags(write=False)
                    weights[f"{name}.{part}"] = view
        return np.argmax(q_values(weights, network.strides, states), axis=1)

    return act
