"""Time the oneDNN layers (packages/dqn-mlx-onednn) against the matrix-product formulation.

    uv run python benchmarks/onednn_slice.py [updates]

1. The input layer alone (Nature: 32 filters 8x8/4 over the uint8 frames, batch 32): forward,
   bias, ReLU and the gradients of weight and bias, compiled.
2. A whole compiled update of each preset with each way of computing the network.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from dqn_mlx import accel

accel.enable()

import dqn_mlx_onednn as onednn  # noqa: E402
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

from dqn_mlx.accel import gemm  # noqa: E402
from dqn_mlx.bench import random_batch  # noqa: E402
from dqn_mlx.config import PRESETS  # noqa: E402
from dqn_mlx.core.learner import Learner  # noqa: E402
from dqn_mlx.core.network import Formulation, QNetwork  # noqa: E402


def timed(step, count: int) -> tuple[float, float]:
    for _ in range(10):
        step()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), 1000 * min(times)


def onednn_pass(network: QNetwork, frames: mx.array) -> mx.array:
    x = frames
    for conv, stride in zip(network.convs, network.strides, strict=True):
        x = onednn.conv2d(x, conv.weight, conv.bias, stride, True)
    x = onednn.linear(x.reshape(x.shape[0], -1), network.hidden.weight, network.hidden.bias, True)
    return onednn.linear(x, network.head.weight, network.head.bias, False)


ONEDNN = Formulation("onednn", onednn_pass, onednn_pass)


def first_layer(count: int) -> None:
    rng = np.random.default_rng(0)
    frames = mx.array(rng.integers(0, 256, (32, 4, 84, 84), dtype=np.uint8))
    conv = nn.Conv2d(4, 32, 8, stride=4)
    cot = mx.array(rng.standard_normal((32, 20, 20, 32)).astype(np.float32))

    def today(w: mx.array, b: mx.array) -> mx.array:
        x = gemm.planes_to_blocks(frames, 4, 84)
        y = nn.relu(gemm.conv_by_im2col(x, gemm.planes_weight(w, 4)) + b)
        return (y * cot).sum()

    def ours(w: mx.array, b: mx.array) -> mx.array:
        return (onednn.conv2d(frames, w, b, 4, True) * cot).sum()

    for name, loss in (("matrix products", today), ("oneDNN layer", ours)):
        step = mx.compile(mx.value_and_grad(loss, argnums=(0, 1)))

        def run(step=step) -> None:
            mx.eval(step(conv.weight, conv.bias))

        median, fastest = timed(run, count)
        print(f"input layer fwd+grad, {name}: median {median:.2f} ms, min {fastest:.2f} ms")


def whole_update(preset: str, count: int) -> None:
    batch = random_batch(np.random.default_rng(0), 4)
    for formulation in (gemm.cpu_formulation(False), ONEDNN):
        learner = Learner(PRESETS[preset], 4)
        learner.online.formulation = formulation
        if learner.target is not None:
            learner.target.formulation = formulation
        median, fastest = timed(lambda learner=learner: learner.update(*batch), count)
        print(f"update_ms_{preset} {formulation.name}: median {median:.2f} ms, min {fastest:.2f}")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    onednn.set_num_threads(2)
    print("oneDNN threads", onednn.num_threads())
    first_layer(count)
    for preset in ("nature2015", "laptop"):
        whole_update(preset, count // 2)
