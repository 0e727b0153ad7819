"""The Q-network: a stack of preprocessed frames in, one Q-value per action out.

Input: ``(batch, history, 84, 84)`` uint8 pixels, exactly as the replay memory and the
environment hand them over. The network converts them to float32 in [0, 1] itself; pixels are
never cast to a signed 8-bit type (values above 127 would wrap negative).

Shapes (2013 Sec. 4.1 / 2015 Methods), "conv C KxK/S" = C filters of KxK with stride S:
- ``nips2013``:   conv 16 8x8/4 -> conv 32 4x4/2 -> fc 256 -> |A|
- ``nature2015``: conv 32 8x8/4 -> conv 64 4x4/2 -> conv 64 3x3/1 -> fc 512 -> |A|
ReLU after every hidden layer.

``QNetwork.definition`` is the one definition of the function. A platform may compute the same
function another way (a ``Formulation``: on a Linux CPU, convolutions as matrix products and
acting in numpy, in ``dqn_mlx.accel``), always from these layers' weights, so that every
checkpoint has one format; ``dqn_mlx.accel.enable()`` registers such formulations, and tests
prove each equal to the definition, gradients included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# (filters, kernel, stride) per conv layer, and the width of the fully connected layer.
ARCHITECTURES: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    "nips2013": (((16, 8, 4), (32, 4, 2)), 256),
    "nature2015": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
}

FRAME_SIZE = 84


@dataclass(frozen=True)
class Formulation:
    """How a ``QNetwork`` computes its function (never what the function is).

    ``learning_pass`` computes the Q-values that gradients flow through (the update);
    ``no_grad_pass`` the Q-values of passes with no gradient (TD targets, evaluation), and
    ``greedy_policy``, if given, builds the argmax_a Q(s, a) of a few observations (n, history,
    84, 84) -> (n,) for acting."""

    name: str
    learning_pass: Callable[[QNetwork, mx.array], mx.array]
    no_grad_pass: Callable[[QNetwork, mx.array], mx.array]
    greedy_policy: Callable[[QNetwork], Callable[[np.ndarray], np.ndarray]] | None = None


def _definition(network: QNetwork, frames: mx.array) -> mx.array:
    return network.definition(frames)


DEFINITION = Formulation("definition", _definition, _definition)
"""The definition itself: ``nn.Conv2d`` layers (Metal has native convolution kernels)."""

_REGISTERED: dict[str, Formulation] = {}


def register_formulation(device_type: str, formulation: Formulation) -> None:
    """Make ``formulation`` the default for new networks on a device type (``cpu``, ``gpu``)."""
    _REGISTERED[device_type] = formulation


def default_formulation() -> Formulation:
    """The formulation registered for the default device, or the definition."""
    device = "cpu" if mx.default_device() == mx.cpu else "gpu"
    return _REGISTERED.get(device, DEFINITION)


class QNetwork(nn.Module):
    """Q(s, .; theta) for one architecture and action count."""

    def __init__(
        self,
        num_actions: int,
        architecture: str = "nips2013",
        history: int = 4,
        formulation: Formulation | None = None,
    ):
        """``formulation``: how to compute it; None takes the default device's
        (``default_formulation``)."""
        super().__init__()
        self.formulation = formulation or default_formulation()
        convs, hidden = ARCHITECTURES[architecture]
        self.strides = [stride for _, _, stride in convs]
        self.convs = []
        channels, size = history, FRAME_SIZE
        for filters, kernel, stride in convs:
            self.convs.append(nn.Conv2d(channels, filters, kernel, stride=stride))
            channels, size = filters, (size - kernel) // stride + 1
        self.hidden = nn.Linear(channels * size * size, hidden)
        self.head = nn.Linear(hidden, num_actions)

    def definition(self, frames: mx.array) -> mx.array:
        """Q(s, .): (batch, history, 84, 84) uint8 -> (batch, actions). The one definition."""
        x = frames.transpose(0, 2, 3, 1).astype(mx.float32) * (1.0 / 255.0)  # NHWC in [0, 1]
        for conv in self.convs:
            x = nn.relu(conv(x))
        x = nn.relu(self.hidden(x.reshape(x.shape[0], -1)))  # (batch, hidden)
        return self.head(x)  # (batch, actions)

    def __call__(self, frames: mx.array) -> mx.array:
        """Q-values for a pass that learns (gradients flow through it)."""
        return self.formulation.learning_pass(self, frames)

    def predict(self, frames: mx.array) -> mx.array:
        """The same Q-values, for passes no gradient flows through (targets, evaluation)."""
        return self.formulation.no_grad_pass(self, frames)


def parameter_shapes(network: nn.Module) -> dict[str, tuple[int, ...]]:
    """Flat ``name -> shape`` map, used to check a checkpoint against an architecture."""
    from mlx.utils import tree_flatten

    flat: list[tuple[str, mx.array]] = tree_flatten(network.parameters())  # type: ignore[assignment]
    return {name: tuple(value.shape) for name, value in flat}
