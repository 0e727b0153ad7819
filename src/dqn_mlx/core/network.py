"""The Q-network: a stack of preprocessed frames in, one Q-value per action out.

Input: ``(batch, history, 84, 84)`` uint8 pixels, exactly as the replay memory and the
environment hand them over. The network converts them to float32 in [0, 1] itself; pixels are
never cast to a signed 8-bit type (values above 127 would wrap negative).

Shapes (2013 Sec. 4.1 / 2015 Methods), "conv C KxK/S" = C filters of KxK with stride S:
- ``nips2013``:   conv 16 8x8/4 -> conv 32 4x4/2 -> fc 256 -> |A|
- ``nature2015``: conv 32 8x8/4 -> conv 64 4x4/2 -> conv 64 3x3/1 -> fc 512 -> |A|
ReLU after every hidden layer.

The layers are given at construction (``Layers``): ``PLAIN``, MLX's own ``nn.Conv2d`` and
``nn.Linear``, is the definition. A platform may bring layers that compute the same function
with the same parameters (on a Linux x86-64 CPU, oneDNN's, in ``dqn_mlx.accel``), so that
every checkpoint has one format; its tests prove them equal to these, gradients included.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

# (filters, kernel, stride) per conv layer, and the width of the fully connected layer.
ARCHITECTURES: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    "nips2013": (((16, 8, 4), (32, 4, 2)), 256),
    "nature2015": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
}

FRAME_SIZE = 84


class ConvReLU(nn.Conv2d):
    """relu(conv(x) + b) for NHWC float32 ``x``, no padding (MLX's ``nn.Conv2d``, then ReLU)."""

    def __call__(self, x: mx.array) -> mx.array:
        return nn.relu(super().__call__(x))


class PixelConvReLU(ConvReLU):
    """The input layer: the uint8 frames (batch, history, 84, 84) read as pixels / 255, NHWC."""

    def __call__(self, frames: mx.array) -> mx.array:
        return super().__call__(frames.transpose(0, 2, 3, 1).astype(mx.float32) * (1.0 / 255.0))


class Dense(nn.Linear):
    """x @ W^T + b, then ReLU if ``relu`` (MLX's ``nn.Linear``)."""

    def __init__(self, inputs: int, outputs: int, relu: bool):
        super().__init__(inputs, outputs)
        self.relu = relu

    def __call__(self, x: mx.array) -> mx.array:
        y = super().__call__(x)
        return nn.relu(y) if self.relu else y


@dataclass(frozen=True)
class Layers:
    """The layer classes a ``QNetwork`` is built from. Every set has the parameters of
    ``PLAIN``'s (the same names and shapes) and computes the same function."""

    name: str
    pixel_conv: type[PixelConvReLU]
    conv: type[ConvReLU]
    dense: type[Dense]


PLAIN = Layers("MLX's layers", PixelConvReLU, ConvReLU, Dense)
"""The definition: MLX's own layers (Metal has native convolution kernels)."""


class QNetwork(nn.Module):
    """Q(s, .; theta) for one architecture and action count: (batch, history, 84, 84) uint8 ->
    (batch, actions)."""

    def __init__(
        self,
        num_actions: int,
        architecture: str = "nips2013",
        history: int = 4,
        layers: Layers = PLAIN,
    ):
        super().__init__()
        self.layers = layers
        convs, hidden = ARCHITECTURES[architecture]
        self.convs = []
        channels, size = history, FRAME_SIZE
        for index, (filters, kernel, stride) in enumerate(convs):
            layer = layers.pixel_conv if index == 0 else layers.conv
            self.convs.append(layer(channels, filters, kernel, stride=stride))
            channels, size = filters, (size - kernel) // stride + 1
        self.hidden = layers.dense(channels * size * size, hidden, relu=True)
        self.head = layers.dense(hidden, num_actions, relu=False)

    def __call__(self, frames: mx.array) -> mx.array:
        x = frames
        for conv in self.convs:
            x = conv(x)  # (batch, h, w, filters)
        return self.head(self.hidden(x.reshape(x.shape[0], -1)))


def parameter_shapes(network: nn.Module) -> dict[str, tuple[int, ...]]:
    """Flat ``name -> shape`` map, used to check a checkpoint against an architecture."""
    from mlx.utils import tree_flatten

    flat: list[tuple[str, mx.array]] = tree_flatten(network.parameters())  # type: ignore[assignment]
    return {name: tuple(value.shape) for name, value in flat}
