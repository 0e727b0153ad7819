"""The network: both formulations compute the same function and gradients from the same
weights (so checkpoints are one format whatever the device), uint8 input handling, shapes."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from dqn_mlx.network import QNetwork


def _pair(architecture: str) -> tuple[QNetwork, QNetwork]:
    mx.random.seed(0)
    conv = QNetwork(6, architecture, formulation="conv")
    gemm = QNetwork(6, architecture, formulation="gemm")
    gemm.update(conv.parameters())
    return conv, gemm


def _frames(n: int = 5) -> mx.array:
    return mx.array(np.random.default_rng(0).integers(0, 256, (n, 4, 84, 84), dtype=np.uint8))


@pytest.mark.parametrize("architecture", ["nips2013", "nature2015"])
def test_gemm_formulation_equals_plain_convolutions(architecture: str) -> None:
    conv, gemm = _pair(architecture)
    frames = _frames()
    expected = np.array(conv(frames))
    assert np.allclose(expected, np.array(gemm(frames)), atol=1e-5)  # the pass that learns
    assert np.allclose(expected, np.array(gemm.predict(frames)), atol=1e-5)  # acting, targets

    def loss(model: QNetwork, x: mx.array) -> mx.array:
        return (model(x) ** 2).sum()

    grads_conv = dict(tree_flatten(nn.value_and_grad(conv, loss)(conv, frames)[1]))
    grads_gemm = dict(tree_flatten(nn.value_and_grad(gemm, loss)(gemm, frames)[1]))
    assert grads_conv.keys() == grads_gemm.keys()
    for name in grads_conv:
        a, b = np.array(grads_conv[name]), np.array(grads_gemm[name])
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max()), name


def test_the_formulation_follows_the_device() -> None:
    mx.set_default_device(mx.cpu)
    assert QNetwork(4).formulation == "gemm"
    if mx.is_available(mx.gpu):
        mx.set_default_device(mx.gpu)
        assert QNetwork(4).formulation == "conv"
        mx.set_default_device(mx.cpu)


def test_pixels_are_read_as_unsigned_bytes_in_0_1() -> None:
    """uint8 input equals float input divided by 255 (a signed cast would turn 255 into -1)."""
    conv, gemm = _pair("nips2013")
    pixels = np.random.default_rng(1).integers(128, 256, (3, 4, 84, 84), dtype=np.uint8)
    scaled = mx.array(pixels.astype(np.float32) / 255.0).transpose(0, 2, 3, 1)
    expected = nn.relu(conv.convs[1](nn.relu(conv.convs[0](scaled))))
    got = [conv._features_conv(mx.array(pixels).transpose(0, 2, 3, 1))]
    got += [gemm._features_gemm(mx.array(pixels), for_gradient=flag) for flag in (True, False)]
    for features in got:
        assert np.allclose(np.array(features), np.array(expected), atol=1e-5)


@pytest.mark.parametrize(
    ("architecture", "params"),
    [
        ("nips2013", 16 * 4 * 64 + 16 + 32 * 16 * 16 + 32 + 2592 * 256 + 256 + 256 * 6 + 6),
        ("nature2015", 1_687_206),
    ],
)
def test_parameter_counts(architecture: str, params: int) -> None:
    net = QNetwork(6, architecture)
    assert sum(v.size for _, v in tree_flatten(net.parameters())) == params
