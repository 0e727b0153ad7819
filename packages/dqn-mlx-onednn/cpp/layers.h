// The Q-network's layers as MLX primitives computed by oneDNN's own layers (Linux x86-64 CPU).
//
// Each op equals its MLX definition (nn.Conv2d / nn.Linear followed by an optional ReLU), and
// so do its gradients: tests/test_onednn_layers.py proves both. Layouts are MLX's: activations
// NHWC, conv weights (out, kh, kw, in), linear weights (out, in); so checkpoints keep one format.
#pragma once

#include <vector>

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace dqn_onednn {

namespace mx = mlx::core;

// relu?(conv(x, w) + b) with no padding and one stride for both axes.
// x: (N, H, W, C) float32, or (N, C, H, W) uint8 pixels read as x / 255 (the frames as the
// replay memory stores them: the cast, the scale and the NCHW -> NHWC move happen in one pass).
// w: (O, KH, KW, C) float32, b: (O,) float32. Returns (N, OH, OW, O) float32.
mx::array conv2d(
    const mx::array& x,
    const mx::array& w,
    const mx::array& b,
    int stride,
    bool relu,
    mx::StreamOrDevice s = {});

// relu?(x @ w.T + b). x: (N, I) float32, w: (O, I) float32, b: (O,) float32 -> (N, O).
mx::array linear(
    const mx::array& x,
    const mx::array& w,
    const mx::array& b,
    bool relu,
    mx::StreamOrDevice s = {});

// OpenMP threads of every later layer computed on any thread (0: OpenMP's own default).
void set_num_threads(int n);
int num_threads();

} // namespace dqn_onednn
