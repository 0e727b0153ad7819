"""The Linux x86-64 CPU's ``Compute``: ``QNetwork``'s layers and the optimizers on oneDNN.

Each class is the plain one with its computation replaced by one primitive of
``dqn_mlx_onednn`` (packages/dqn-mlx-onednn), so the parameters, their names and the optimizer
state are the plain classes' own, and a checkpoint is the same file whichever computed it:
- the input layer reads the uint8 frames as they are (cast, scale and NCHW -> NHWC in one
  pass), every layer adds its bias and ReLU inside oneDNN's primitive, and each backward pass
  is oneDNN's backward-data and backward-weights;
- Adam and centered RMSProp are one pass over the parameters on every core.
"""

from __future__ import annotations

import dqn_mlx_onednn as ext
import mlx.core as mx
import mlx.optimizers as optim

from dqn_mlx.core.learner import CenteredRMSProp, Compute
from dqn_mlx.core.network import ConvReLU, Dense, Layers, PixelConvReLU


class OnednnPixelConvReLU(PixelConvReLU):
    def __call__(self, frames: mx.array) -> mx.array:
        return ext.conv2d(frames, self.weight, self.bias, self.stride[0], True)


class OnednnConvReLU(ConvReLU):
    def __call__(self, x: mx.array) -> mx.array:
        return ext.conv2d(x, self.weight, self.bias, self.stride[0], True)


class OnednnDense(Dense):
    def __call__(self, x: mx.array) -> mx.array:
        return ext.linear(x, self.weight, self.bias, self.relu)


class OnednnAdam(optim.Adam):
    """MLX's Adam, bias correction folded into the step's two constants as MLX computes them."""

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        b1, b2 = self.betas
        if self.bias_correction:
            c1 = (lr / (1 - b1**self.step)).astype(gradient.dtype)
            c2 = mx.rsqrt(1 - b2**self.step).astype(gradient.dtype)
        else:
            c1, c2 = lr, mx.array(1.0, gradient.dtype)
        new, state["m"], state["v"] = ext.adam_step(
            parameter, gradient, state["m"], state["v"], c1, c2, b1, b2, self.eps
        )
        return new


class OnednnCenteredRMSProp(CenteredRMSProp):
    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        new, state["g"], state["g2"] = ext.centered_rmsprop_step(
            parameter, gradient, state["g"], state["g2"], lr, self.grad_decay, self.sq_decay,
            self.min_sq,
        )  # fmt: skip
        return new


ONEDNN_LAYERS = Layers(
    f"oneDNN {ext.ONEDNN_VERSION} layers", OnednnPixelConvReLU, OnednnConvReLU, OnednnDense
)
ONEDNN = Compute(ONEDNN_LAYERS.name, ONEDNN_LAYERS, OnednnAdam, OnednnCenteredRMSProp)


def use_threads(count: int) -> int:
    """Size the layers' OpenMP teams (``accel.thread_count`` chose ``count``). Returns it."""
    ext.set_num_threads(count)
    return count
