"""The Q-network's convolutions as matrix products: the Linux CPU formulation of ``QNetwork``.

MLX's CPU backend computes the backward pass of a *strided* convolution on a slow direct path
(the whole update is about 5x slower than with this formulation), while its matrix products
run on the BLAS. A kxk stride-s convolution equals a (k/s)x(k/s) stride-1 convolution over
space-to-depth blocks of sxs pixels, so every layer becomes space-to-depth + a stride-1
convolution, computed as matrix products:
- the input layer's blocks are cut straight from the uint8 frame planes;
- passes that learn use im2col products with a hand-written backward pass
  (``conv_for_gradient``: fewer copies than differentiating ``mx.conv2d``);
- passes with no gradient (TD targets, evaluation) use a shifted-sum product for layers of
  2x2 taps (faster forward), and im2col for the 3x3 layer.

It reads ``QNetwork``'s own layers (weights in MLX's layout: conv ``(out, kh, kw, in)``), so
checkpoints are one format, and equals ``QNetwork.definition`` up to float rounding, gradients
included (``tests/test_accel.py``). How each trick was measured: docs/linux-cpu.md.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from dqn_mlx.core.network import Formulation, QNetwork

# Unsigned integer types by byte width: strided copies of uint8 data move runs of adjacent
# bytes as one element of these (MLX's copy kernels cost per element, not per byte).
_UINT_OF_BYTES = {2: mx.uint16, 4: mx.uint32, 8: mx.uint64}


def planes_to_blocks(frames: mx.array, stride: int, used: int) -> mx.array:
    """Space-to-depth straight from the (batch, C, H, W) uint8 frame planes: the top-left
    ``used x used`` pixels become (batch, used/s, used/s, C*s*s), each sxs block of every
    plane one position, channels ordered (C, row in block, col in block). No separate
    NCHW -> NHWC transpose.

    The s pixels of one block row are adjacent bytes, so the copy moves them as one wider
    integer (4 bytes for the input layer's stride 4): MLX's strided copy costs per element,
    and this makes it several times faster."""
    batch, channels = frames.shape[0], frames.shape[1]
    blocks = used // stride
    wide = _UINT_OF_BYTES.get(stride) if frames.dtype == mx.uint8 else None
    x = frames[:, :, :used, :used]
    if wide is not None:
        x = x.view(wide)  # (batch, C, used, blocks): one block row per element
        x = x.reshape(batch, channels, blocks, stride, blocks).transpose(0, 2, 4, 1, 3)
        return x.reshape(batch, blocks, blocks, channels * stride).view(mx.uint8)
    x = x.reshape(batch, channels, blocks, stride, blocks, stride)
    x = x.transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(batch, blocks, blocks, channels * stride * stride)


def planes_weight(weight: mx.array, stride: int) -> mx.array:
    """Conv weight (out, k, k, C) -> (out, k/s, k/s, C*s*s), matching ``planes_to_blocks``."""
    filters, kernel, _, channels = weight.shape
    n = kernel // stride
    w = weight.reshape(filters, n, stride, n, stride, channels).transpose(0, 1, 3, 5, 2, 4)
    return w.reshape(filters, n, n, channels * stride * stride)


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


def _as_wide(x: mx.array) -> mx.array:
    """``x`` viewed with 8 bytes of channels (2 float32 or 8 uint8) as one element, when the
    channel count allows: the strided copies below then move 2x or 8x fewer elements."""
    per_element = 8 // x.dtype.size
    return x.view(mx.uint64) if x.dtype != mx.uint64 and x.shape[-1] % per_element == 0 else x


def _windows(x: mx.array, kernel: int, count: int, step: int) -> mx.array:
    """im2col: (batch, count, count, kernel*kernel*C), position (i, j) holding the kxk window
    of NHWC ``x`` at (step*i, step*j), taps ordered (row, col, C) like a conv weight.

    One overlapping strided view of ``x`` copied once: each window row (k pixels of C
    channels) is a contiguous run of ``x``. Cheaper than concatenating the k*k window slices
    (one copy per tap into a strided output).
    ``mx.as_strided`` reads ``x`` in row-major order (it copies a non-contiguous input first),
    so the strides below are those of a contiguous NHWC array."""
    wide = _as_wide(x)
    batch, height, width, channels = wide.shape
    row = width * channels
    view = mx.as_strided(
        wide,
        (batch, count, count, kernel, kernel * channels),
        (height * row, step * row, step * channels, row, 1),
    )
    stacked = view.reshape(batch, count, count, -1)
    return stacked.view(x.dtype) if wide.dtype != x.dtype else stacked


def im2col_patches(x: mx.array, kernel: int, stride: int) -> tuple[mx.array, int]:
    """The kxk windows of NHWC ``x`` at stride s as rows (batch*count*count, k*k*C), channels
    ordered (row, col, C) like a conv weight, and count, the output size. uint8 windows are
    copied as bytes (4x fewer than float32) and converted to [0, 1] after the copy."""
    count = (x.shape[1] - kernel) // stride + 1
    patches = _windows(x, kernel, count, stride)
    patches = patches.reshape(x.shape[0] * count * count, -1)
    if patches.dtype == mx.uint8:
        patches = patches.astype(mx.float32) * (1.0 / 255.0)
    return patches, count


def conv_by_im2col(x: mx.array, weight: mx.array, stride: int = 1) -> mx.array:
    """Valid kxk stride-s convolution of NHWC ``x`` as one product over its stacked windows
    (im2col). Cheap to differentiate for the weight."""
    filters, kernel = weight.shape[0], weight.shape[1]
    patches, count = im2col_patches(x, kernel, stride)
    y = patches @ weight.reshape(filters, -1).T
    return y.reshape(x.shape[0], count, count, filters)


def conv_by_shifted_sum(x: mx.array, weight: mx.array) -> mx.array:
    """Stride-1 valid convolution of NHWC ``x`` with no window copies: one product of every
    position with all nxn kernel taps at once, then the nxn shifted output slices summed.
    Faster than im2col forward, but slow to differentiate (its backward scatters),
    so it serves the passes that need no gradient: acting and the TD target."""
    batch, size, _, depth = x.shape
    filters, n = weight.shape[0], weight.shape[1]
    out = size - n + 1
    taps = weight.transpose(3, 1, 2, 0).reshape(depth, n * n * filters)
    y = (x.reshape(-1, depth) @ taps).reshape(batch, size, size, n, n, filters)
    total = y[:, :out, :out, 0, 0]
    for i in range(n):
        for j in range(n):
            if i or j:
                total = total + y[:, i : i + out, j : j + out, i, j]
    return total


def _conv_input_gradient(grad_y: mx.array, weight: mx.array, stride: int, size: int) -> mx.array:
    """d loss / d x of a valid kxk stride-s convolution, from its output gradient.

    On the sxs block grid (space-to-depth) the layer is an nxn stride-1 convolution, n = k/s,
    whose input gradient is the "full" correlation of the output gradient with the flipped
    kernel: pad by n-1, stack the nxn windows, one product, then blocks back to pixels."""
    batch, count, _, filters = grad_y.shape
    kernel, channels = weight.shape[1], weight.shape[3]
    n, grid = kernel // stride, size // stride
    padded = mx.pad(grad_y, [(0, 0), (n - 1, grid - count), (n - 1, grid - count), (0, 0)])
    windows = _windows(padded, n, grid, 1)
    block_weight = s2d_weight(weight, stride)[:, ::-1, ::-1, :]  # flipped (filters, n, n, s*s*C)
    rows = block_weight.transpose(1, 2, 0, 3).reshape(n * n * filters, -1)
    blocks = windows.reshape(batch * grid * grid, -1) @ rows  # (positions, s*s*C)
    blocks = _as_wide(blocks.reshape(batch, grid, grid, stride, stride, channels))
    pixels = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(batch, grid * stride, grid * stride, -1)
    pixels = pixels.view(mx.float32) if pixels.dtype != mx.float32 else pixels
    if grid * stride < size:  # rows and columns the layer never reads get no gradient
        extra = size - grid * stride
        pixels = mx.pad(pixels, [(0, 0), (0, extra), (0, extra), (0, 0)])
    return pixels


_CONV_FOR_GRADIENT: dict[int, Any] = {}


def conv_for_gradient(x: mx.array, weight: mx.array, stride: int) -> mx.array:
    """Valid kxk stride-s convolution of NHWC ``x`` (no bias) with a hand-written backward
    pass: im2col forward, weight gradient from the same patches, input gradient as one
    product over the block grid (``_conv_input_gradient``). MLX's own ``conv2d`` gradient
    re-gathers the patches and pads in several more copies, which on the CPU cost more
    than the products."""
    if stride not in _CONV_FOR_GRADIENT:

        @mx.custom_function
        def conv(x: mx.array, weight: mx.array) -> mx.array:
            return conv_by_im2col(x, weight, stride)

        @conv.vjp
        def conv_vjp(
            primals: tuple[mx.array, mx.array], grad_y: mx.array, _output: mx.array
        ) -> tuple[mx.array, mx.array]:
            x, weight = primals
            # the same patches as the forward's: compile merges the two into one copy
            patches, _ = im2col_patches(x, weight.shape[1], stride)
            flat = grad_y.reshape(-1, grad_y.shape[-1])
            grad_weight = (flat.T @ patches).reshape(weight.shape)
            return _conv_input_gradient(grad_y, weight, stride, x.shape[1]), grad_weight

        _CONV_FOR_GRADIENT[stride] = conv
    return _CONV_FOR_GRADIENT[stride](x, weight)


def gemm_features(network: QNetwork, frames: mx.array, for_gradient: bool) -> mx.array:
    """The conv layers' output (batch, h, w, filters): every kxk stride-s layer as a (k/s)x(k/s)
    stride-1 convolution over sxs blocks. ``for_gradient``: im2col products with cheap
    gradients; otherwise the faster forward-only shifted sums."""
    first, *rest = zip(network.convs, network.strides, strict=True)
    conv, stride = first
    kernel = int(conv.weight.shape[1])
    used = (frames.shape[2] - kernel) // stride * stride + kernel  # pixels the layer reads
    x = planes_to_blocks(frames, stride, used)  # uint8 (batch, blocks, blocks, C*s*s)
    weight = planes_weight(conv.weight, stride)
    if for_gradient:
        x = conv_by_im2col(x, weight)  # converts the uint8 windows to [0, 1] itself
    else:
        x = conv_by_shifted_sum(x.astype(mx.float32) * (1.0 / 255.0), weight)
    x = nn.relu(x + conv.bias)
    for conv, stride in rest:
        if for_gradient:
            y = conv_for_gradient(x, conv.weight, stride)
        elif conv.weight.shape[1] // stride >= 3:  # many taps: the shifted sum's extra
            y = conv_by_im2col(x, conv.weight, stride)  # products and passes cost more
        else:
            y = conv_by_shifted_sum(space_to_depth(x, stride), s2d_weight(conv.weight, stride))
        x = nn.relu(y + conv.bias)
    return x  # (batch, h, w, filters)


def linear_weight_first(layer: nn.Linear, x: mx.array) -> mx.array:
    """``layer(x)`` computed as ``(W @ x^T)^T + b``. The same numbers as ``x @ W^T + b``, but
    the weight's gradient comes out of the backward pass as a contiguous (out, in) array
    rather than a transposed view; MLX's CPU optimizer kernels run much slower on the
    strided view of the largest weight matrix (1.6M of the Nature network's 1.7M numbers)."""
    return (layer.weight @ x.T).T + layer.bias


def learning_pass(network: QNetwork, frames: mx.array) -> mx.array:
    """Q-values through im2col products whose gradients are cheap."""
    return _q_values(network, gemm_features(network, frames, for_gradient=True))


def no_grad_pass(network: QNetwork, frames: mx.array) -> mx.array:
    """Q-values through faster forward-only products."""
    return _q_values(network, gemm_features(network, frames, for_gradient=False))


def _q_values(network: QNetwork, features: mx.array) -> mx.array:
    x = features.reshape(features.shape[0], -1)
    x = nn.relu(linear_weight_first(network.hidden, x))
    return linear_weight_first(network.head, x)  # (batch, actions)


def cpu_formulation(numpy_acting: bool = True) -> Formulation:
    """Matrix-product convolutions, and acting in numpy (``numpy_actor``) if ``numpy_acting``;
    else acting is the compiled MLX pass of ``core/policy.py``, through the same products."""
    from dqn_mlx.accel.numpy_actor import numpy_greedy_policy

    return Formulation(
        "gemm", learning_pass, no_grad_pass, numpy_greedy_policy if numpy_acting else None
    )
