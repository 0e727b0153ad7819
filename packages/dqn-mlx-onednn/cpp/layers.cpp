// oneDNN computes each layer; MLX schedules it, differentiates it and owns its memory.
//
// Forward passes are oneDNN convolution / inner product primitives with bias and ReLU as a
// post-op. A vjp first masks the cotangent by ReLU's derivative (oneDNN's eltwise backward on
// the layer's output), then asks oneDNN for the gradients of the weights and bias (one
// backward-weights primitive) and, where wanted, of the input (backward-data).
#include "layers.h"

#include "dense.h"

#include <omp.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "dnnl.hpp"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

namespace dqn_onednn {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

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

memory make_memory(const memory::desc& md, const void* data) {
  return memory(md, cpu_engine(), const_cast<void*>(data));
}

// Primitive descriptors and primitives, built once per shape and kept for the process.
template <typename T>
class Cache {
 public:
  template <typename Make>
  std::shared_ptr<T> get(const std::string& key, Make make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = entries_.find(key);
    if (found != entries_.end()) {
      return found->second;
    }
    auto entry = std::make_shared<T>(make());
    entries_.emplace(key, entry);
    return entry;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<T>> entries_;
};

std::string key_of(std::initializer_list<long> values) {
  std::ostringstream out;
  for (long v : values) {
    out << v << ',';
  }
  return out.str();
}

// A weight in oneDNN's preferred layout, reordered from MLX's when they differ.
struct Reordered {
  bool needed = false;
  dnnl::reorder prim;
  memory::desc from, to;
};

Reordered reorder_between(const memory::desc& from, const memory::desc& to) {
  Reordered r;
  r.from = from;
  r.to = to;
  r.needed = from != to;
  if (r.needed) {
    r.prim = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to));
  }
  return r;
}

// Runs ``r`` from ``src`` into a scratch buffer and returns the memory to use (``src`` itself
// when no reorder is needed).
memory reordered(const Reordered& r, const void* src, std::vector<char>& scratch, dnnl::stream& s) {
  memory user = make_memory(r.from, src);
  if (!r.needed) {
    return user;
  }
  scratch.resize(r.to.get_size());
  memory out = make_memory(r.to, scratch.data());
  r.prim.execute(s, user, out);
  return out;
}

void allocate(mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
}

dnnl::primitive_attr relu_attr(bool relu) {
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// ----------------------------------------------------------------------------------------
// Convolution geometry and its primitives.

struct ConvShape {
  long n, c, h, w, o, k, stride, oh, ow;
  memory::dims src() const { return {n, c, h, w}; }
  memory::dims weights() const { return {o, c, k, k}; }
  memory::dims dst() const { return {n, o, oh, ow}; }
  memory::dims strides() const { return {stride, stride}; }
  memory::dims pad() const { return {0, 0}; }
  std::string key(bool relu) const { return key_of({n, c, h, w, o, k, stride, relu}); }
};

ConvShape conv_shape(long n, long h, long w, long c, long o, long k, long stride) {
  return {n, c, h, w, o, k, stride, (h - k) / stride + 1, (w - k) / stride + 1};
}

dnnl::convolution_forward::primitive_desc conv_forward_pd(const ConvShape& g, bool relu) {
  return dnnl::convolution_forward::primitive_desc(
      cpu_engine(),
      dnnl::prop_kind::forward_training,
      dnnl::algorithm::convolution_direct,
      memory::desc(g.src(), dt::f32, tag::nhwc),
      memory::desc(g.weights(), dt::f32, tag::any),
      memory::desc({g.o}, dt::f32, tag::a),
      memory::desc(g.dst(), dt::f32, tag::nhwc),
      g.strides(),
      g.pad(),
      g.pad(),
      relu_attr(relu));
}

memory::desc mlx_weights(const memory::desc& like) {
  return memory::desc(like.get_dims(), dt::f32, tag::ohwi);
}

// A primitive that reads the weights, and the reorder of MLX's (out, kh, kw, in) layout into
// the one it chose.
template <typename Primitive>
struct ReadsWeights {
  Primitive prim;
  Reordered weights;
  explicit ReadsWeights(const typename Primitive::primitive_desc& pd)
      : prim(pd), weights(reorder_between(mlx_weights(pd.weights_desc()), pd.weights_desc())) {}
};
using ConvForward = ReadsWeights<dnnl::convolution_forward>;
using ConvBackwardData = ReadsWeights<dnnl::convolution_backward_data>;

struct ConvBackwardWeights {
  dnnl::convolution_backward_weights prim;
  Reordered weights;  // from oneDNN's gradient layout back to MLX's
  explicit ConvBackwardWeights(const dnnl::convolution_backward_weights::primitive_desc& pd)
      : prim(pd),
        weights(reorder_between(pd.diff_weights_desc(), mlx_weights(pd.diff_weights_desc()))) {}
};

Cache<ConvForward> conv_forward_cache;
Cache<ConvBackwardData> conv_backward_data_cache;
Cache<ConvBackwardWeights> conv_backward_weights_cache;

std::shared_ptr<ConvForward> conv_forward(const ConvShape& g, bool relu) {
  return conv_forward_cache.get(g.key(relu), [&] { return ConvForward(conv_forward_pd(g, relu)); });
}

std::shared_ptr<ConvBackwardData> conv_backward_data(const ConvShape& g) {
  return conv_backward_data_cache.get(g.key(false), [&] {
    return ConvBackwardData(dnnl::convolution_backward_data::primitive_desc(
        cpu_engine(),
        dnnl::algorithm::convolution_direct,
        memory::desc(g.src(), dt::f32, tag::nhwc),
        memory::desc(g.weights(), dt::f32, tag::any),
        memory::desc(g.dst(), dt::f32, tag::nhwc),
        g.strides(),
        g.pad(),
        g.pad(),
        conv_forward_pd(g, false)));
  });
}

std::shared_ptr<ConvBackwardWeights> conv_backward_weights(const ConvShape& g) {
  return conv_backward_weights_cache.get(g.key(false), [&] {
    return ConvBackwardWeights(dnnl::convolution_backward_weights::primitive_desc(
        cpu_engine(),
        dnnl::algorithm::convolution_direct,
        memory::desc(g.src(), dt::f32, tag::nhwc),
        memory::desc(g.weights(), dt::f32, tag::any),
        memory::desc({g.o}, dt::f32, tag::a),
        memory::desc(g.dst(), dt::f32, tag::nhwc),
        g.strides(),
        g.pad(),
        g.pad(),
        conv_forward_pd(g, false)));
  });
}

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

// ----------------------------------------------------------------------------------------
// Inner product (its weights (O, I) are MLX's nn.Linear layout as they are).

struct LinearShape {
  long n, i, o;
  std::string key(bool relu) const { return key_of({n, i, o, relu}); }
  memory src(const void* p) const { return make_memory({{n, i}, dt::f32, tag::ab}, p); }
  memory weights(const void* p) const { return make_memory({{o, i}, dt::f32, tag::ab}, p); }
  memory bias(const void* p) const { return make_memory({{o}, dt::f32, tag::a}, p); }
  memory dst(const void* p) const { return make_memory({{n, o}, dt::f32, tag::ab}, p); }
};

dnnl::inner_product_forward::primitive_desc linear_forward_pd(const LinearShape& g, bool relu) {
  return dnnl::inner_product_forward::primitive_desc(
      cpu_engine(), dnnl::prop_kind::forward_training, g.src(nullptr).get_desc(),
      g.weights(nullptr).get_desc(), g.bias(nullptr).get_desc(), g.dst(nullptr).get_desc(),
      relu_attr(relu));
}

Cache<dnnl::inner_product_forward> linear_forward_cache;
Cache<dnnl::inner_product_backward_data> linear_backward_data_cache;
Cache<dnnl::inner_product_backward_weights> linear_backward_weights_cache;

// ----------------------------------------------------------------------------------------
// Primitives.

// What every layer primitive shares: CPU only, identified by its kind and geometry, and run as
// one task on the stream with its inputs and outputs registered.
class CpuLayer : public mx::Primitive {
 public:
  CpuLayer(mx::Stream stream, const char* kind, int stride, bool relu = false, bool pixels = false)
      : mx::Primitive(stream), kind_(kind), stride_(stride), relu_(relu), pixels_(pixels) {}
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string("[dqn_mlx_onednn] ") + kind_ + " runs on the CPU only.");
  }
  const char* name() const override { return kind_; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const CpuLayer&>(other);
    return kind_ == o.kind_ && stride_ == o.stride_ && relu_ == o.relu_ && pixels_ == o.pixels_;
  }

 protected:
  // Outputs get their memory first: ``make_task`` reads their addresses.
  template <typename MakeTask>
  void run(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs,
           MakeTask make_task) {
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) {
      encoder.set_input_array(in);
    }
    for (auto& out : outputs) {
      allocate(out);
      encoder.set_output_array(out);
    }
    encoder.dispatch(make_task());
  }
  // A layer's vjp, in ``argnums`` order: dL/dx from ``input_grad``, and dL/dw, dL/db from the
  // one backward-weights pair ``weight_grads`` makes on first need.
  template <typename InputGrad, typename WeightGrads>
  static std::vector<mx::array> gradients(const std::vector<int>& argnums, InputGrad input_grad,
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
  const char* kind_;
  int stride_;
  bool relu_, pixels_;
};


// dL/d(pre-activation) = dL/d(output) where the output (a ReLU's) is positive, else 0.
class ReluBackward : public CpuLayer {
 public:
  explicit ReluBackward(mx::Stream stream) : CpuLayer(stream, "OnednnReluBackward", 0) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    run(in, out, [&] {
      return [dy = Input(in[0]), y = Input(in[1]), dx = out[0].data<float>(),
                  size = static_cast<long>(out[0].size())]() mutable {
      static Cache<dnnl::eltwise_backward> cache;
      memory::desc md({size}, dt::f32, tag::a);
      auto prim = cache.get(key_of({size}), [&] {
        auto algorithm = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
        dnnl::eltwise_forward::primitive_desc hint(
            cpu_engine(), dnnl::prop_kind::forward_training, algorithm, md, md, 0.f, 0.f);
        return dnnl::eltwise_backward(dnnl::eltwise_backward::primitive_desc(
            cpu_engine(), algorithm, md, md, md, 0.f, 0.f, hint));
      });
      auto& s = thread_stream();
      prim->execute(s, {{DNNL_ARG_DIFF_DST, make_memory(md, dy.get<float>())},
                        {DNNL_ARG_DST, make_memory(md, y.get<float>())},
                        {DNNL_ARG_DIFF_SRC, make_memory(md, dx)}});
      s.wait();
    };
    });
  }
};

mx::array relu_backward(const mx::array& dy, const mx::array& y, const mx::Stream& s) {
  return mx::array(y.shape(), mx::float32, std::make_shared<ReluBackward>(s), {dy, y});
}

memory nhwc(const memory::dims& dims, const void* data) {
  return make_memory({dims, dt::f32, tag::nhwc}, data);
}

// inputs: dL/d(pre-activation), w. output: dL/dx (N, H, W, C).
class Conv2dBackwardData : public CpuLayer {
 public:
  Conv2dBackwardData(mx::Stream stream, int stride)
      : CpuLayer(stream, "OnednnConv2dBackwardData", stride) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    const auto& dx = out[0];
    ConvShape g = conv_shape(dx.shape(0), dx.shape(1), dx.shape(2), dx.shape(3), in[1].shape(0),
                             in[1].shape(1), stride_);
    run(in, out, [&] {
      return [g, dy = Input(in[0]), w = Input(in[1]), dx = out[0].data<float>()]() mutable {
      auto p = conv_backward_data(g);
      auto& s = thread_stream();
      std::vector<char> scratch;
      memory weights = reordered(p->weights, w.get<float>(), scratch, s);
      p->prim.execute(s, {{DNNL_ARG_DIFF_DST, nhwc(g.dst(), dy.get<float>())},
                          {DNNL_ARG_WEIGHTS, weights},
                          {DNNL_ARG_DIFF_SRC, nhwc(g.src(), dx)}});
      s.wait();
    };
    });
  }
};

// inputs: x (N, H, W, C) float32, dL/d(pre-activation). outputs: dL/dw, dL/db.
class Conv2dBackwardWeights : public CpuLayer {
 public:
  Conv2dBackwardWeights(mx::Stream stream, int stride)
      : CpuLayer(stream, "OnednnConv2dBackwardWeights", stride) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    const auto& x = in[0];
    ConvShape g = conv_shape(x.shape(0), x.shape(1), x.shape(2), x.shape(3), out[0].shape(0),
                             out[0].shape(1), stride_);
    run(in, out, [&] {
      return [g, x = Input(in[0]), dy = Input(in[1]), dw = out[0].data<float>(),
                  db = out[1].data<float>()]() mutable {
      auto p = conv_backward_weights(g);
      auto& s = thread_stream();
      memory mlx_layout = make_memory({g.weights(), dt::f32, tag::ohwi}, dw);
      std::vector<char> scratch(p->weights.needed ? p->weights.from.get_size() : 0);
      memory grad = p->weights.needed ? make_memory(p->weights.from, scratch.data()) : mlx_layout;
      p->prim.execute(s, {{DNNL_ARG_SRC, nhwc(g.src(), x.get<float>())},
                          {DNNL_ARG_DIFF_DST, nhwc(g.dst(), dy.get<float>())},
                          {DNNL_ARG_DIFF_WEIGHTS, grad},
                          {DNNL_ARG_DIFF_BIAS, make_memory({{g.o}, dt::f32, tag::a}, db)}});
      if (p->weights.needed) {
        p->weights.prim.execute(s, grad, mlx_layout);
      }
      s.wait();
    };
    });
  }
};

// inputs: x, w, b. outputs: y; with ``pixels`` (x is (N, C, H, W) uint8) also x as
// (N, H, W, C) float32 in [0, 1], kept for the weight gradient.
class Conv2d : public CpuLayer {
 public:
  Conv2d(mx::Stream stream, int stride, bool relu, bool pixels)
      : CpuLayer(stream, "OnednnConv2d", stride, relu, pixels) {}

  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    const auto& x = in[0];
    long n = x.shape(0), c = x.shape(pixels_ ? 1 : 3);
    long h = x.shape(pixels_ ? 2 : 1), w = x.shape(pixels_ ? 3 : 2);
    ConvShape g = conv_shape(n, h, w, c, in[1].shape(0), in[1].shape(1), stride_);
    run(in, out, [&] {
      return [g, relu = relu_, x = Input(in[0]), w = Input(in[1]), b = Input(in[2]),
                  y = out[0].data<float>(),
                  converted = pixels_ ? out[1].data<float>() : nullptr]() mutable {
      auto p = conv_forward(g, relu);
      auto& s = thread_stream();
      const void* input = converted;
      if (converted != nullptr) {
        pixels_to_nhwc(x.get<uint8_t>(), converted, g.n, g.c, g.h, g.w);
      } else {
        input = x.get<float>();
      }
      std::vector<char> scratch;
      memory weights = reordered(p->weights, w.get<float>(), scratch, s);
      p->prim.execute(s, {{DNNL_ARG_SRC, nhwc(g.src(), input)},
                          {DNNL_ARG_WEIGHTS, weights},
                          {DNNL_ARG_BIAS, make_memory({{g.o}, dt::f32, tag::a}, b.get<float>())},
                          {DNNL_ARG_DST, nhwc(g.dst(), y)}});
      s.wait();
    };
    });
  }

  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
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
};

// inputs: dL/d(pre-activation), w. output: dL/dx (N, I).
class LinearBackwardData : public CpuLayer {
 public:
  explicit LinearBackwardData(mx::Stream stream) : CpuLayer(stream, "OnednnLinearBackwardData", 0) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    LinearShape g{out[0].shape(0), out[0].shape(1), in[1].shape(0)};
    run(in, out, [&] {
      return [g, dy = Input(in[0]), w = Input(in[1]), dx = out[0].data<float>()]() mutable {
        auto prim = linear_backward_data_cache.get(g.key(false), [&] {
          return dnnl::inner_product_backward_data({cpu_engine(), g.src(nullptr).get_desc(),
                                                    g.weights(nullptr).get_desc(),
                                                    g.dst(nullptr).get_desc(),
                                                    linear_forward_pd(g, false)});
        });
        auto& s = thread_stream();
        prim->execute(s, {{DNNL_ARG_DIFF_DST, g.dst(dy.get<float>())},
                          {DNNL_ARG_WEIGHTS, g.weights(w.get<float>())},
                          {DNNL_ARG_DIFF_SRC, g.src(dx)}});
        s.wait();
      };
    });
  }
};

// inputs: x, dL/d(pre-activation). outputs: dL/dw, dL/db.
class LinearBackwardWeights : public CpuLayer {
 public:
  explicit LinearBackwardWeights(mx::Stream stream)
      : CpuLayer(stream, "OnednnLinearBackwardWeights", 0) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    LinearShape g{in[0].shape(0), in[0].shape(1), out[0].shape(0)};
    run(in, out, [&] {
      return [g, x = Input(in[0]), dy = Input(in[1]), dw = out[0].data<float>(),
              db = out[1].data<float>()]() mutable {
        auto prim = linear_backward_weights_cache.get(g.key(false), [&] {
          return dnnl::inner_product_backward_weights(
              {cpu_engine(), g.src(nullptr).get_desc(), g.weights(nullptr).get_desc(),
               g.bias(nullptr).get_desc(), g.dst(nullptr).get_desc(),
               linear_forward_pd(g, false)});
        });
        auto& s = thread_stream();
        prim->execute(s, {{DNNL_ARG_SRC, g.src(x.get<float>())},
                          {DNNL_ARG_DIFF_DST, g.dst(dy.get<float>())},
                          {DNNL_ARG_DIFF_WEIGHTS, g.weights(dw)},
                          {DNNL_ARG_DIFF_BIAS, g.bias(db)}});
        s.wait();
      };
    });
  }
};

// inputs: x, w, b. output: relu?(x @ w.T + b).
class Linear : public CpuLayer {
 public:
  Linear(mx::Stream stream, bool relu) : CpuLayer(stream, "OnednnLinear", 0, relu) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    LinearShape g{in[0].shape(0), in[0].shape(1), in[1].shape(0)};
    run(in, out, [&] {
      return [g, relu = relu_, x = Input(in[0]), w = Input(in[1]), b = Input(in[2]),
              y = out[0].data<float>()]() mutable {
        auto prim = linear_forward_cache.get(
            g.key(relu), [&] { return dnnl::inner_product_forward(linear_forward_pd(g, relu)); });
        auto& s = thread_stream();
        prim->execute(s, {{DNNL_ARG_SRC, g.src(x.get<float>())},
                          {DNNL_ARG_WEIGHTS, g.weights(w.get<float>())},
                          {DNNL_ARG_BIAS, g.bias(b.get<float>())},
                          {DNNL_ARG_DST, g.dst(y)}});
        s.wait();
      };
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
};

void check(bool ok, const std::string& what) {
  if (!ok) {
    throw std::invalid_argument("[dqn_mlx_onednn] " + what);
  }
}

}  // namespace

mx::array conv2d(const mx::array& x, const mx::array& w, const mx::array& b, int stride,
                 bool relu, mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  bool pixels = x.dtype() == mx::uint8;
  check(x.ndim() == 4 && w.ndim() == 4 && b.ndim() == 1, "conv2d: x and w are 4-D, b is 1-D");
  check(pixels || x.dtype() == mx::float32, "conv2d: x is float32 NHWC or uint8 NCHW pixels");
  check(w.dtype() == mx::float32 && b.dtype() == mx::float32, "conv2d: w and b are float32");
  check(w.shape(1) == w.shape(2), "conv2d: square kernels only");
  long c = pixels ? x.shape(1) : x.shape(3);
  long h = pixels ? x.shape(2) : x.shape(1);
  long wd = pixels ? x.shape(3) : x.shape(2);
  check(w.shape(3) == c && b.shape(0) == w.shape(0), "conv2d: channels of x, w and b differ");
  check(stride > 0 && h >= w.shape(1) && wd >= w.shape(1), "conv2d: input smaller than kernel");
  ConvShape g = conv_shape(x.shape(0), h, wd, c, w.shape(0), w.shape(1), stride);
  mx::Shape y_shape{static_cast<int>(g.n), static_cast<int>(g.oh), static_cast<int>(g.ow),
                    static_cast<int>(g.o)};
  auto prim = std::make_shared<Conv2d>(stream, stride, relu, pixels);
  std::vector<mx::array> inputs{x, w, b};
  if (!pixels) {
    return mx::array(y_shape, mx::float32, prim, std::move(inputs));
  }
  mx::Shape converted{x.shape(0), x.shape(2), x.shape(3), x.shape(1)};
  return mx::array::make_arrays({y_shape, converted}, {mx::float32, mx::float32}, prim,
                                std::move(inputs))[0];
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
