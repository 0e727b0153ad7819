"""The network's one definition: shapes, parameter counts, uint8 input handling. (Its CPU
formulation is proven equal to it in tests/test_accel.py.)"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from dqn_mlx.core import network
from dqn_mlx.core.network import (
    DEFINITION,
    Formulation,
    QNetwork,
    _definition,
    default_formulation,
)


def test_pixels_are_read_as_unsigned_bytes_in_0_1() -> None:
    """uint8 input equals float input divided by 255 (a signed cast would turn 255 into -1)."""
    mx.random.seed(0)
    net = QNetwork(6, "nips2013", formulation=DEFINITION)
    pixels = np.random.default_rng(1).integers(128, 256, (3, 4, 84, 84), dtype=np.uint8)
    scaled = mx.array(pixels.astype(np.float32) / 255.0).transpose(0, 2, 3, 1)
    x = nn.relu(net.convs[1](nn.relu(net.convs[0](scaled))))
    expected = net.head(nn.relu(net.hidden(x.reshape(3, -1))))
    assert np.allclose(np.array(net(mx.array(pixels))), np.array(expected), atol=1e-5)


def test_q_values_have_one_column_per_action() -> None:
    for architecture in ("nips2013", "nature2015"):
        net = QNetwork(5, architecture, formulation=DEFINITION)
        frames = mx.zeros((2, 4, 84, 84), dtype=mx.uint8)
        assert net(frames).shape == net.predict(frames).shape == (2, 5)


def test_a_network_computes_with_its_device_formulation_or_the_definition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(network, "_REGISTERED", {})
    assert default_formulation() is DEFINITION and QNetwork(4).formulation is DEFINITION
    other = Formulation("other", _definition, _definition)
    device = "cpu" if mx.default_device() == mx.cpu else "gpu"
    network.register_formulation(device, other)
    assert QNetwork(4).formulation is other


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
