"""The Q-network: a stack of preprocessed frames in, one Q-value per action out.

Input: ``(batch, history, 84, 84)`` uint8 pixels, exactly as the replay memory and the
environment hand them over. The network converts them to float32 in [0, 1] itself; pixels are
never cast to a signed 8-bit type (values above 127 would wrap negative).

Shapes (2013 Sec. 4.1 / 2015 Methods), "conv C KxK/S" = C filters of KxK with stride S:
- ``nips2013``:   conv 16 8x8/4 -> conv 32 4x4/2 -> fc 256 -> |A|
- ``nature2015``: conv 32 8x8/4 -> conv 64 4x4/2 -> conv 64 3x3/1 -> fc 512 -> |A|
ReLU after every hidden layer. Weights use MLX's layout (conv: out, kh, kw, in), the one format
every checkpoint is written in, whichever formulation computes the forward pass.

Two formulations of the same function, chosen by device:
- ``conv``: ``nn.Conv2d`` layers. Metal has native convolution kernels: the fast path on Macs.
- ``gemm``: convolutions as matrix products. MLX's CPU backend computes the backward pass of a
  *strided* convolution on a slow direct path (the whole update is about 5x slower), while
  its stride-1 convolutions run on the BLAS. A kxk stride-s convolution equals a (k/s)x(k/s)
  stride-1 convolution over space-to-depth blocks of sxs pixels, so the hidden layers become
  ``space_to_depth`` + a stride-1 ``mx.conv2d``; the input layer, which needs no input
  gradient, is im2col on uint8 bytes + one (batch*positions, patch) x (patch, filters) product.
  Equal to ``conv`` up to float rounding, gradients included (tested), with the same weights.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

# (filters, kernel, stride) per conv layer, and the width of the fully connected layer.
ARCHITECTURES: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    "nips2013": (((16, 8, 4), (32, 4, 2)), 256),
    "nature2015": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
}

FRAME_SIZE = 84


def conv_patches(x: mx.array, kernel: int, stride: int) -> mx.array:
    """im2col of an NHWC batch for a kxk stride-s convolution whose kernel is a multiple of s.

    Returns (batch * out * out, k * k * channels), with each patch ordered as
    (block row, block col, row in block, col in block, channel): the order ``gemm_weight``
    gives the weights. ``out = (size - k) // s + 1``.
    """
    batch, size, _, channels = x.shape
    out = (size - kernel) // stride + 1
    used = (out - 1) * stride + kernel  # rows/cols the convolution reads; a multiple of stride
    blocks, n = used // stride, kernel // stride
    x = x[:, :used, :used, :].reshape(batch, blocks, stride, blocks, stride, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, blocks, blocks, stride * stride * channels)
    windows = [x[:, i : i + out, j : j + out, :] for i in range(n) for j in range(n)]
    return mx.stack(windows, axis=3).reshape(batch * out * out, kernel * kernel * channels)


def gemm_weight(weight: mx.array, stride: int) -> mx.array:
    """Conv weight (out, k, k, in) in the patch order of ``conv_patches``: (out, k*k*in)."""
    filters, kernel, _, channels = weight.shape
    n = kernel // stride
    w = weight.reshape(filters, n, stride, n, stride, channels).transpose(0, 1, 3, 2, 4, 5)
    return w.reshape(filters, kernel * kernel * channels)


def space_to_depth(x: mx.array, stride: int) -> mx.array:
    """(batch, size, size, C) -> (batch, size/s, size/s, s*s*C), each sxs block one position
    with channels ordered (row in block, col in block, C). A kxk stride-s convolution of ``x``
    equals a (k/s)x(k/s) stride-1 convolution of this with ``s2d_weight``'s weights."""
    if stride == 1:
        return x
    batch, size, _, channels = x.shape
    blocks = size // stride
    x = x[:, : blocks * stride, : blocks * stride, :]
    x = x.reshape(batch, blocks, stride, blocks, stride, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, blocks, blocks, stride * stride * channels)


def s2d_weight(weight: mx.array, stride: int) -> mx.array:
    """Conv weight (out, k, k, in) -> (out, k/s, k/s, s*s*in), matching ``space_to_depth``."""
    if stride == 1:
        return weight
    filters, kernel, _, channels = weight.shape
    n = kernel // stride
    w = weight.reshape(filters, n, stride, n, stride, channels).transpose(0, 1, 3, 2, 4, 5)
    return w.reshape(filters, n, n, stride * stride * channels)


class QNetwork(nn.Module):
    """Q(s, .; theta) for one architecture and action count."""

    def __init__(
        self,
        num_actions: int,
        architecture: str = "nips2013",
        history: int = 4,
        formulation: str | None = None,
    ):
        """``formulation``: ``conv`` or ``gemm``; None picks ``gemm`` on the CPU, else ``conv``."""
        super().__init__()
        if formulation is None:
            formulation = "gemm" if mx.default_device() == mx.cpu else "conv"
        self.formulation = formulation
        self.strides = [stride for _, _, stride in ARCHITECTURES[architecture][0]]
        convs, hidden = ARCHITECTURES[architecture]
        self.convs = []
        channels, size = history, FRAME_SIZE
        for filters, kernel, stride in convs:
            self.convs.append(nn.Conv2d(channels, filters, kernel, stride=stride))
            channels, size = filters, (size - kernel) // stride + 1
        self.hidden = nn.Linear(channels * size * size, hidden)
        self.head = nn.Linear(hidden, num_actions)

    def __call__(self, frames: mx.array) -> mx.array:
        x = frames.transpose(0, 2, 3, 1)  # (batch, 84, 84, history) uint8: NHWC for convolutions
        if self.formulation == "conv":
            x = self._features_conv(x)
            x = nn.relu(self.hidden(x.reshape(x.shape[0], -1)))  # (batch, hidden)
            return self.head(x)  # (batch, actions)
        x = self._features_gemm(x)
        x = nn.relu(linear_weight_first(self.hidden, x.reshape(x.shape[0], -1)))
        return linear_weight_first(self.head, x)

    def _features_conv(self, x: mx.array) -> mx.array:
        x = x.astype(mx.float32) * (1.0 / 255.0)  # uint8 -> [0, 1]
        for conv in self.convs:
            x = nn.relu(conv(x))
        return x  # (batch, h, w, filters)

    def _features_gemm(self, x: mx.array) -> mx.array:
        batch = x.shape[0]
        first, *rest = zip(self.convs, self.strides, strict=True)
        conv, stride = first
        kernel = int(conv.weight.shape[1])
        out = (x.shape[1] - kernel) // stride + 1
        # The input layer: im2col on uint8 (4x fewer bytes moved), then [0, 1], one product.
        patches = conv_patches(x, kernel, stride).astype(mx.float32) * (1.0 / 255.0)
        y = patches @ gemm_weight(conv.weight, stride).T + conv.bias  # (batch*out*out, filters)
        x = nn.relu(y).reshape(batch, out, out, -1)
        for conv, stride in rest:  # stride-1 convolutions take MLX's GEMM-based path
            x = nn.relu(
                mx.conv2d(space_to_depth(x, stride), s2d_weight(conv.weight, stride)) + conv.bias
            )
        return x  # (batch, h, w, filters)


def linear_weight_first(layer: nn.Linear, x: mx.array) -> mx.array:
    """``layer(x)`` computed as ``(W @ x^T)^T + b``. The same numbers as ``x @ W^T + b``, but
    the weight's gradient comes out of the backward pass as a contiguous (out, in) array
    rather than a transposed view; MLX's CPU optimizer kernels run about 2x slower on the
    strided view of the largest weight matrix (1.6M of the Nature network's 1.7M numbers)."""
    return (layer.weight @ x.T).T + layer.bias


def parameter_shapes(network: nn.Module) -> dict[str, tuple[int, ...]]:
    """Flat ``name -> shape`` map, used to check a checkpoint against an architecture."""
    from mlx.utils import tree_flatten

    flat: list[tuple[str, mx.array]] = tree_flatten(network.parameters())  # type: ignore[assignment]
    return {name: tuple(value.shape) for name, value in flat}
