"""The network's one definition: shapes, parameter counts, uint8 input handling. (The
platform's layers are proven equal to it in tests/test_accel.py and
tests/test_onednn_layers.py.)"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from dqn_mlx.core.network import PLAIN, QNetwork


def test_pixels_are_read_as_unsigned_bytes_in_0_1() -> None:
    """uint8 input equals float input divided by 255 (a signed cast would turn 255 into -1)."""
    mx.random.seed(0)
    net = QNetwork(6, "nips2013")
    pixels = np.random.default_rng(1).integers(128, 256, (3, 4, 84, 84), dtype=np.uint8)
    scaled = mx.array(pixels.astype(np.float32) / 255.0).transpose(0, 2, 3, 1)
    first, second = net.convs
    x = nn.relu(mx.conv2d(scaled, first.weight, stride=4) + first.bias)
    x = second(x)  # NHWC float in
    expected = net.head(net.hidden(x.reshape(3, -1)))
    assert np.allclose(np.array(net(mx.array(pixels))), np.array(expected), atol=1e-5)


def test_q_values_have_one_column_per_action() -> None:
    for architecture in ("nips2013", "nature2015"):
        net = QNetwork(5, architecture)
        frames = mx.zeros((2, 4, 84, 84), dtype=mx.uint8)
        assert net(frames).shape == (2, 5)


def test_a_network_is_built_from_the_plain_layers_unless_told() -> None:
    net = QNetwork(4)
    assert net.layers is PLAIN
    assert [type(c) for c in net.convs] == [PLAIN.pixel_conv, PLAIN.conv]
    assert type(net.hidden) is PLAIN.dense and net.hidden.relu and not net.head.relu


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
