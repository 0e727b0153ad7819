"""The Q-network's layers on oneDNN, as MLX primitives (Linux x86-64 CPU).

``conv2d(x, w, b, stride, relu)`` and ``linear(x, w, b, relu)`` equal ``nn.Conv2d`` and
``nn.Linear`` (then ReLU if asked) in MLX's layouts, gradients included. Importing this checks
that the module was built against the ``mlx`` that runs: MLX's C++ ABI is its version's.
"""

from __future__ import annotations

import mlx.core as mx  # registers mlx.core.array with nanobind before the layers load

from dqn_mlx_onednn._layers import (
    MLX_VERSION,
    ONEDNN_VERSION,
    adam_step,
    centered_rmsprop_step,
    conv2d,
    linear,
    num_threads,
    set_num_threads,
)


class MlxVersionMismatch(ImportError):
    """The module was built against another mlx than the one installed."""


if mx.__version__.split(".dev")[0] != MLX_VERSION:
    raise MlxVersionMismatch(
        f"dqn-mlx-onednn was built against mlx {MLX_VERSION} but mlx {mx.__version__} is "
        "installed: rebuild it with `uv sync --reinstall-package dqn-mlx-onednn`"
    )

__all__ = [
    "MLX_VERSION",
    "ONEDNN_VERSION",
    "adam_step",
    "centered_rmsprop_step",
    "conv2d",
    "linear",
    "num_threads",
    "set_num_threads",
]
