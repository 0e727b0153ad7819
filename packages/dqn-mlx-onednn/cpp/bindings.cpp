// Python bindings of the layers (module dqn_mlx_onednn._layers). The module is in nanobind's
// "mlx" domain, so its functions take and return mlx.core.array.
#include <nanobind/nanobind.h>
#include <nanobind/stl/variant.h>

#include "dnnl.hpp"
#include "layers.h"
#include "optimizers.h"
#include <nanobind/stl/vector.h>
#include "mlx/version.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_layers, m) {
  m.doc() = "The Q-network's layers computed by oneDNN, as MLX primitives with gradients.";
  m.def("conv2d", &dqn_onednn::conv2d, "x"_a, "w"_a, "b"_a, "stride"_a, "relu"_a, nb::kw_only(),
        "stream"_a = nb::none(),
        "relu?(conv(x, w) + b), no padding. x: (N, H, W, C) float32 or (N, C, H, W) uint8 "
        "pixels read as x / 255; w: (O, KH, KW, C); returns (N, OH, OW, O).");
  m.def("linear", &dqn_onednn::linear, "x"_a, "w"_a, "b"_a, "relu"_a, nb::kw_only(),
        "stream"_a = nb::none(), "relu?(x @ w.T + b). x: (N, I), w: (O, I); returns (N, O).");
  m.def("adam_step", &dqn_onednn::adam_step, "p"_a, "g"_a, "m"_a, "v"_a, "c1"_a, "c2"_a,
        "b1"_a, "b2"_a, "eps"_a, nb::kw_only(), "stream"_a = nb::none(),
        "Adam: returns [p', m', v'] with p' = p - c1 m' / (sqrt(v') c2 + eps).");
  m.def("centered_rmsprop_step", &dqn_onednn::centered_rmsprop_step, "p"_a, "g"_a, "a"_a,
        "a2"_a, "lr"_a, "d1"_a, "d2"_a, "min_sq"_a, nb::kw_only(), "stream"_a = nb::none(),
        "Centered RMSProp: returns [p', a', a2'] with p' = p - lr g / sqrt(a2' - a'^2 + min_sq).");
  m.def("set_num_threads", &dqn_onednn::set_num_threads, "n"_a,
        "OpenMP threads of every later layer (0: OpenMP's default).");
  m.def("num_threads", &dqn_onednn::num_threads);
  m.attr("MLX_VERSION") = nb::str(
      (std::to_string(MLX_VERSION_MAJOR) + "." + std::to_string(MLX_VERSION_MINOR) + "." +
       std::to_string(MLX_VERSION_PATCH)).c_str());
  const dnnl_version_t* v = dnnl_version();
  m.attr("ONEDNN_VERSION") = nb::str(
      (std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
       std::to_string(v->patch)).c_str());
}
