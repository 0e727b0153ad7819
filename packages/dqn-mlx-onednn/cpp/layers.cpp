// oneDNN computes each layer; MLX schedules it, differentiates it and owns its memory.
//
// Forward passes are oneDNN convolution / inner product primitives with bias and ReLU as a
// post-op. A vjp first masks the cotangent by ReLU's derivative (where the layer's output is
// positive), then asks oneDNN for the gradients of the weights and bias (one backward-weights
// primitive) and, where wanted, of the input (backward-data).
#include "layers.h"

#include <omp.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

#include "dnnl.hpp"
#include "primitive.h"

namespace dqn_onednn {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;
using Args = std::unordered_map<int, memory>;
using Data = std::vector<const void*>;
using Out = std::vector<void*>;

std::atomic<int> g_num_threads{0};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

}  // namespace

// OpenMP sizes its team per calling thread: every pass sets it on MLX's CPU thread.
void apply_thread_count() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n > 0 && omp_get_max_threads() != n) {
    omp_set_num_threads(n);
  }
}

namespace {

dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  apply_thread_count();
  return stream;
}

void execute(const dnnl::primitive& prim, const Args& args) {
  auto& s = thread_stream();
  prim.execute(s, args);
  s.wait();
}

memory make_memory(const memory::desc& md, const void* data) {
  return memory(md, cpu_engine(), const_cast<void*>(data));
}

// Primitive descriptors and primitives, built once per shape and kept for the process.
template <typename T>
class Cache {
 public:
  template <typename Make>
  std::shared_ptr<T> get(const std::vector<long>& shape, Make make) {
    std::ostringstream key;
    for (long v : shape) {
      key << v << ',';
    }
    std::lock_guard<std::mutex> lock(mutex_);
    auto [found, added] = entries_.try_emplace(key.str());
    if (added) {
      found->second = std::make_shared<T>(make());
    }
    return found->second;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<T>> entries_;
};

dnnl::primitive_attr relu_attr(bool relu) {
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// A weight reordered between MLX's layout and the one oneDNN chose, where they differ.
struct Reorder {
  memory::desc from, to;
  dnnl::reorder prim;
  Reorder(const memory::desc& from, const memory::desc& to) : from(from), to(to) {
    if (from != to) {
      prim = dnnl::reorder({cpu_engine(), from, cpu_engine(), to});
    }
  }
  bool needed() const { return from != to; }
  // ``from``'s data as ``to``: ``data`` itself, or its reorder into ``scratch``.
  memory apply(const void* data, std::vector<char>& scratch) const {
    memory src = make_memory(from, data);
    if (!needed()) {
      return src;
    }
    scratch.resize(to.get_size());
    memory dst = make_memory(to, scratch.data());
    execute(prim, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
    return dst;
  }
};

// ----------------------------------------------------------------------------------------
// Convolution: activations NHWC, MLX's weights (O, KH, KW, C), no padding.

struct ConvShape {
  long n, c, h, w, o, k, stride;
  memory::desc src() const { return {{n, c, h, w}, dt::f32, tag::nhwc}; }
  memory::desc weights(tag t = tag::any) const { return {{o, c, k, k}, dt::f32, t}; }
  memory::desc bias() const { return {{o}, dt::f32, tag::a}; }
  memory::desc dst() const {
    return {{n, o, (h - k) / stride + 1, (w - k) / stride + 1}, dt::f32, tag::nhwc};
  }
  std::vector<long> key() const { return {n, c, h, w, o, k, stride}; }
};

dnnl::convolution_forward::primitive_desc conv_forward_pd(const ConvShape& g, bool relu) {
  return {cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
          g.src(), g.weights(), g.bias(), g.dst(), {g.stride, g.stride}, {0, 0}, {0, 0},
          relu_attr(relu)};
}

// A primitive and the reorder of its weights (into it, or out of it for a gradient).
template <typename Primitive>
struct WithWeights {
  Primitive prim;
  Reorder weights;
};

Cache<WithWeights<dnnl::convolution_forward>> conv_forward_cache;
Cache<WithWeights<dnnl::convolution_backward_data>> conv_backward_data_cache;
Cache<WithWeights<dnnl::convolution_backward_weights>> conv_backward_weights_cache;

// (N, C, H, W) uint8 -> (N, H, W, C) float32 in [0, 1].
void pixels_to_nhwc(const uint8_t* src, float* dst, long n, long c, long h, long w) {
  const float scale = 1.0f / 255.0f;
#pragma omp parallel for collapse(2)
  for (long i = 0; i < n; ++i) {
    for (long y = 0; y < h; ++y) {
      float* out = dst + ((i * h + y) * w) * c;
      for (long x = 0; x < w; ++x) {
        for (long ch = 0; ch < c; ++ch) {
          out[x * c + ch] = scale * src[((i * c + ch) * h + y) * w + x];
        }
      }
    }
  }
}

// dL/d(pre-activation) from dL/dy, where y is a ReLU's output: the pre-activation is positive
// exactly where y is.
mx::array relu_backward(const mx::array& dy, const mx::array& y, const mx::Stream& s) {
  return mx::where(mx::greater(y, mx::array(0.0f), s), dy, mx::array(0.0f), s);
}

// A layer's vjp, in ``argnums`` order: dL/dx from ``input_grad``, and dL/dw, dL/db from the
// one backward-weights pair ``weight_grads`` makes on first need.
template <typename InputGrad, typename WeightGrads>
std::vector<mx::array> gradients(const std::vector<int>& argnums, InputGrad input_grad,
                                 WeightGrads weight_grads) {
  std::vector<mx::array> pair, grads;
  for (int arg : argnums) {
    if (arg == 0) {
      grads.push_back(input_grad());
      continue;
    }
    if (pair.empty()) {
      pair = weight_grads();
    }
    grads.push_back(pair[arg == 1 ? 0 : 1]);
  }
  return grads;
}

// inputs: dL/d(pre-activation), w. output: dL/dx (N, H, W, C).
class Conv2dBackwardData : public CpuPrimitive {
 public:
  Conv2dBackwardData(mx::Stream stream, int stride)
      : CpuPrimitive(stream, "OnednnConv2dBackwardData", {float(stride)}), stride_(stride) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    const auto& dx = out[0];
    ConvShape g{dx.shape(0), dx.shape(3), dx.shape(1), dx.shape(2), in[1].shape(0),
                in[1].shape(1), stride_};
    run(in, out, [g](const Data& x, const Out& y) {
      auto p = conv_backward_data_cache.get(g.key(), [&] {
        dnnl::convolution_backward_data::primitive_desc pd(
            cpu_engine(), dnnl::algorithm::convolution_direct, g.src(), g.weights(), g.dst(),
            {g.stride, g.stride}, {0, 0}, {0, 0}, conv_forward_pd(g, false));
        return WithWeights<dnnl::convolution_backward_data>{
            {pd}, {g.weights(tag::ohwi), pd.weights_desc()}};
      });
      std::vector<char> scratch;
      execute(p->prim, {{DNNL_ARG_DIFF_DST, make_memory(g.dst(), x[0])},
                        {DNNL_ARG_WEIGHTS, p->weights.apply(x[1], scratch)},
                        {DNNL_ARG_DIFF_SRC, make_memory(g.src(), y[0])}});
    });
  }

 private:
  int stride_;
};

// inputs: x (N, H, W, C) float32, dL/d(pre-activation). outputs: dL/dw, dL/db.
class Conv2dBackwardWeights : public CpuPrimitive {
 public:
  Conv2dBackwardWeights(mx::Stream stream, int stride)
      : CpuPrimitive(stream, "OnednnConv2dBackwardWeights", {float(stride)}), stride_(stride) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    const auto& x = in[0];
    ConvShape g{x.shape(0), x.shape(3), x.shape(1), x.shape(2), out[0].shape(0),
                out[0].shape(1), stride_};
    run(in, out, [g](const Data& x, const Out& y) {
      auto p = conv_backward_weights_cache.get(g.key(), [&] {
        dnnl::convolution_backward_weights::primitive_desc pd(
            cpu_engine(), dnnl::algorithm::convolution_direct, g.src(), g.weights(), g.bias(),
            g.dst(), {g.stride, g.stride}, {0, 0}, {0, 0}, conv_forward_pd(g, false));
        return WithWeights<dnnl::convolution_backward_weights>{
            {pd}, {pd.diff_weights_desc(), g.weights(tag::ohwi)}};
      });
      memory mlx_layout = make_memory(g.weights(tag::ohwi), y[0]);
      std::vector<char> scratch(p->weights.needed() ? p->weights.from.get_size() : 0);
      memory grad = p->weights.needed() ? make_memory(p->weights.from, scratch.data()) : mlx_layout;
      execute(p->prim, {{DNNL_ARG_SRC, make_memory(g.src(), x[0])},
                        {DNNL_ARG_DIFF_DST, make_memory(g.dst(), x[1])},
                        {DNNL_ARG_DIFF_WEIGHTS, grad},
                        {DNNL_ARG_DIFF_BIAS, make_memory(g.bias(), y[1])}});
      if (p->weights.needed()) {
        execute(p->weights.prim, {{DNNL_ARG_FROM, grad}, {DNNL_ARG_TO, mlx_layout}});
      }
    });
  }

 private:
  int stride_;
};

// inputs: x, w, b. outputs: y; with ``pixels`` (x is (N, C, H, W) uint8) also x as
// (N, H, W, C) float32 in [0, 1], kept for the weight gradient.
class Conv2d : public CpuPrimitive {
 public:
  Conv2d(mx::Stream stream, int stride, bool relu, bool pixels)
      : CpuPrimitive(stream, "OnednnConv2d", {float(stride), float(relu), float(pixels)}),
        stride_(stride), relu_(relu), pixels_(pixels) {}

  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    const auto& x = in[0];
    bool pixels = pixels_, relu = relu_;
    ConvShape g{x.shape(0), x.shape(pixels ? 1 : 3), x.shape(pixels ? 2 : 1),
                x.shape(pixels ? 3 : 2), in[1].shape(0), in[1].shape(1), stride_};
    run(in, out, [g, relu, pixels](const Data& x, const Out& y) {
      auto p = conv_forward_cache.get({relu, g.n, g.c, g.h, g.w, g.o, g.k, g.stride}, [&] {
        auto pd = conv_forward_pd(g, relu);
        return WithWeights<dnnl::convolution_forward>{{pd}, {g.weights(tag::ohwi), pd.weights_desc()}};
      });
      const void* input = x[0];
      if (pixels) {
        pixels_to_nhwc(static_cast<const uint8_t*>(x[0]), static_cast<float*>(y[1]), g.n, g.c,
                       g.h, g.w);
        input = y[1];
      }
      std::vector<char> scratch;
      execute(p->prim, {{DNNL_ARG_SRC, make_memory(g.src(), input)},
                        {DNNL_ARG_WEIGHTS, p->weights.apply(x[1], scratch)},
                        {DNNL_ARG_BIAS, make_memory(g.bias(), x[2])},
                        {DNNL_ARG_DST, make_memory(g.dst(), y[0])}});
    });
  }

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals,
                             const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums,
                             const std::vector<mx::array>& outputs) override {
    const auto& x = primals[0];
    const auto& w = primals[1];
    auto s = stream();
    mx::array dpre = relu_ ? relu_backward(cotangents[0], outputs[0], s) : cotangents[0];
    return gradients(
        argnums,
        [&] {
          return pixels_ ? mx::zeros_like(x, s)  // pixels are data, not parameters
                         : mx::array(x.shape(), mx::float32,
                                     std::make_shared<Conv2dBackwardData>(s, stride_), {dpre, w});
        },
        [&] {
          return mx::array::make_arrays({w.shape(), {w.shape(0)}}, {mx::float32, mx::float32},
                                        std::make_shared<Conv2dBackwardWeights>(s, stride_),
                                        {pixels_ ? outputs[1] : x, dpre});
        });
  }

 private:
  int stride_;
  bool relu_, pixels_;
};

// ----------------------------------------------------------------------------------------
// Inner product: x (N, I), MLX's nn.Linear weights (O, I) as they are.

struct LinearShape {
  long n, i, o;
  memory::desc src() const { return {{n, i}, dt::f32, tag::ab}; }
  memory::desc weights() const { return {{o, i}, dt::f32, tag::ab}; }
  memory::desc bias() const { return {{o}, dt::f32, tag::a}; }
  memory::desc dst() const { return {{n, o}, dt::f32, tag::ab}; }
};

dnnl::inner_product_forward::primitive_desc linear_forward_pd(const LinearShape& g, bool relu) {
  return {cpu_engine(), dnnl::prop_kind::forward_training, g.src(), g.weights(), g.bias(),
          g.dst(), relu_attr(relu)};
}

Cache<dnnl::inner_product_forward> linear_forward_cache;
Cache<dnnl::inner_product_backward_data> linear_backward_data_cache;
Cache<dnnl::inner_product_backward_weights> linear_backward_weights_cache;

// inputs: dL/d(pre-activation), w. output: dL/dx (N, I).
class LinearBackwardData : public CpuPrimitive {
 public:
  explicit LinearBackwardData(mx::Stream stream)
      : CpuPrimitive(stream, "OnednnLinearBackwardData", {}) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    LinearShape g{out[0].shape(0), out[0].shape(1), in[1].shape(0)};
    run(in, out, [g](const Data& x, const Out& y) {
      auto prim = linear_backward_data_cache.get({g.n, g.i, g.o}, [&] {
        return dnnl::inner_product_backward_data(
            {cpu_engine(), g.src(), g.weights(), g.dst(), linear_forward_pd(g, false)});
      });
      execute(*prim, {{DNNL_ARG_DIFF_DST, make_memory(g.dst(), x[0])},
                      {DNNL_ARG_WEIGHTS, make_memory(g.weights(), x[1])},
                      {DNNL_ARG_DIFF_SRC, make_memory(g.src(), y[0])}});
    });
  }
};

// inputs: x, dL/d(pre-activation). outputs: dL/dw, dL/db.
class LinearBackwardWeights : public CpuPrimitive {
 public:
  explicit LinearBackwardWeights(mx::Stream stream)
      : CpuPrimitive(stream, "OnednnLinearBackwardWeights", {}) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    LinearShape g{in[0].shape(0), in[0].shape(1), out[0].shape(0)};
    run(in, out, [g](const Data& x, const Out& y) {
      auto prim = linear_backward_weights_cache.get({g.n, g.i, g.o}, [&] {
        return dnnl::inner_product_backward_weights({cpu_engine(), g.src(), g.weights(),
                                                     g.bias(), g.dst(),
                                                     linear_forward_pd(g, false)});
      });
      execute(*prim, {{DNNL_ARG_SRC, make_memory(g.src(), x[0])},
                      {DNNL_ARG_DIFF_DST, make_memory(g.dst(), x[1])},
                      {DNNL_ARG_DIFF_WEIGHTS, make_memory(g.weights(), y[0])},
                      {DNNL_ARG_DIFF_BIAS, make_memory(g.bias(), y[1])}});
    });
  }
};

// inputs: x, w, b. output: relu?(x @ w.T + b).
class Linear : public CpuPrimitive {
 public:
  Linear(mx::Stream stream, bool relu)
      : CpuPrimitive(stream, "OnednnLinear", {float(relu)}), relu_(relu) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    LinearShape g{in[0].shape(0), in[0].shape(1), in[1].shape(0)};
    run(in, out, [g, relu = relu_](const Data& x, const Out& y) {
      auto prim = linear_forward_cache.get(
          {relu, g.n, g.i, g.o}, [&] { return dnnl::inner_product_forward(linear_forward_pd(g, relu)); });
      execute(*prim, {{DNNL_ARG_SRC, make_memory(g.src(), x[0])},
                      {DNNL_ARG_WEIGHTS, make_memory(g.weights(), x[1])},
                      {DNNL_ARG_BIAS, make_memory(g.bias(), x[2])},
                      {DNNL_ARG_DST, make_memory(g.dst(), y[0])}});
    });
  }

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals,
                             const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums,
                             const std::vector<mx::array>& outputs) override {
    const auto& x = primals[0];
    const auto& w = primals[1];
    auto s = stream();
    mx::array dpre = relu_ ? relu_backward(cotangents[0], outputs[0], s) : cotangents[0];
    return gradients(
        argnums,
        [&] {
          return mx::array(x.shape(), mx::float32, std::make_shared<LinearBackwardData>(s),
                           {dpre, w});
        },
        [&] {
          return mx::array::make_arrays({w.shape(), {w.shape(0)}}, {mx::float32, mx::float32},
                                        std::make_shared<LinearBackwardWeights>(s), {x, dpre});
        });
  }

 private:
  bool relu_;
};

}  // namespace

mx::array conv2d(const mx::array& x, const mx::array& w, const mx::array& b, int stride,
                 bool relu, mx::StreamOrDevice s) {
  bool pixels = x.dtype() == mx::uint8;
  check(x.ndim() == 4 && w.ndim() == 4 && b.ndim() == 1, "conv2d: x and w are 4-D, b is 1-D");
  check(pixels || x.dtype() == mx::float32, "conv2d: x is float32 NHWC or uint8 NCHW pixels");
  check(w.dtype() == mx::float32 && b.dtype() == mx::float32, "conv2d: w and b are float32");
  check(w.shape(1) == w.shape(2), "conv2d: square kernels only");
  int c = x.shape(pixels ? 1 : 3), h = x.shape(pixels ? 2 : 1), wd = x.shape(pixels ? 3 : 2);
  int k = w.shape(1);
  check(w.shape(3) == c && b.shape(0) == w.shape(0), "conv2d: channels of x, w and b differ");
  check(stride > 0 && h >= k && wd >= k, "conv2d: input smaller than kernel");
  mx::Shape y_shape{x.shape(0), (h - k) / stride + 1, (wd - k) / stride + 1, w.shape(0)};
  auto prim = std::make_shared<Conv2d>(mx::to_stream(s), stride, relu, pixels);
  if (!pixels) {
    return mx::array(y_shape, mx::float32, prim, {x, w, b});
  }
  return mx::array::make_arrays({y_shape, {x.shape(0), h, wd, c}}, {mx::float32, mx::float32},
                                prim, {x, w, b})[0];
}

mx::array linear(const mx::array& x, const mx::array& w, const mx::array& b, bool relu,
                 mx::StreamOrDevice s) {
  check(x.ndim() == 2 && w.ndim() == 2 && b.ndim() == 1, "linear: x and w are 2-D, b is 1-D");
  check(x.dtype() == mx::float32 && w.dtype() == mx::float32 && b.dtype() == mx::float32,
        "linear: x, w and b are float32");
  check(x.shape(1) == w.shape(1) && b.shape(0) == w.shape(0), "linear: shapes of x, w, b differ");
  return mx::array({x.shape(0), w.shape(0)}, mx::float32,
                   std::make_shared<Linear>(mx::to_stream(s), relu), {x, w, b});
}

void set_num_threads(int n) {
  g_num_threads.store(n < 0 ? 0 : n);
}

int num_threads() {
  return g_num_threads.load();
}

}  // namespace dqn_onednn
