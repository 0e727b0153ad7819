// The optimizer steps of dqn-mlx's two presets as single MLX primitives (Linux x86-64 CPU).
//
// MLX's compiled optimizer step is one fused element-wise loop on one thread; this computes the
// same equations over all cores, vectorised for the CPU it runs on, in place where MLX lets an
// input's buffer be reused. tests/test_onednn_layers.py proves both equal to MLX's.
#pragma once

#include <vector>

#include "mlx/ops.h"

namespace dqn_onednn {

namespace mx = mlx::core;

// Adam (MLX's form, bias correction folded into c1 and c2):
//   m' = b1 m + (1 - b1) g;  v' = b2 v + (1 - b2) g^2;  p' = p - c1 m' / (sqrt(v') c2 + eps).
// Without bias correction c1 = lr, c2 = 1. Returns {p', m', v'}. b1, b2 and eps are doubles,
// the Python floats MLX's optimizer holds: each decay and its complement (1 - b) are rounded
// to float as MLX rounds them.
std::vector<mx::array> adam_step(
    const mx::array& p, const mx::array& g, const mx::array& m, const mx::array& v,
    const mx::array& c1, const mx::array& c2, double b1, double b2, double eps,
    mx::StreamOrDevice s = {});

// DeepMind's centered RMSProp (2015):
//   a' = d1 a + (1 - d1) g;  a2' = d2 a2 + (1 - d2) g^2;  p' = p - lr g / sqrt(a2' - a'^2 + min_sq).
// Returns {p', a', a2'}.
std::vector<mx::array> centered_rmsprop_step(
    const mx::array& p, const mx::array& g, const mx::array& a, const mx::array& a2,
    const mx::array& lr, double d1, double d2, double min_sq, mx::StreamOrDevice s = {});

}  // namespace dqn_onednn
