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

struct ConvForward {
  dnnl::convolution_forward prim;
  Reordered weights;
  explicit ConvForward(const dnnl::convolution_forward::primitive_desc& pd)
      : prim(pd),
        weights(reorder_between(memory::desc(pd.weights_desc().get_dims(), dt::f32, tag::ohwi),
                                pd.weights_desc())) {}
};

struct ConvBackwardData {
  dnnl::convolution_backward_data prim;
  Reordered weights;
  explicit ConvBackwardData(const dnnl::convolution_backward_data::primitive_desc& pd)
      : prim(pd),
        weights(reorder_between(memory::desc(pd.weights_desc().get_dims(), dt::f32, tag::ohwi),
                                pd.weights_desc())) {}
};

struct ConvBackwardWeights {
  dnnl::convolution_backward_weights prim;
  Reordered weights;  // from oneDNN's gradient layout back to MLX's
  explicit ConvBackwardWeights(const dnnl::convolution_backward_weights::primitive_desc& pd)
      : prim(pd),
        weights(reorder_between(
            pd.diff_weights_desc(),
            memory::desc(pd.diff_weights_desc().get_dims(), dt::f32, tag::ohwi))) {}
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
// Inner product.

struct LinearShape {
  long n, i, o;
  std::string key(bool relu) const { return key_of({n, i, o, relu}); }
};

dnnl::inner_product_forward::primitive_desc linear_forward_pd(const LinearShape& g, bool relu) {
  return dnnl::inner_product_forward::primitive_desc(
      cpu_engine(),
      dnnl::prop_kind::forward_training,
      memory::desc({g.n, g.i}, dt::f32, tag::ab),
      memory::desc({g.o, g.i}, dt::f32, tag::ab),
      memory::desc({g.o}, dt::f32, tag::a),
      memory::desc({g.n, g.o}, dt::f32, tag::ab),
      relu_attr(relu));
}

Cache<dnnl::inner_product_forward> linear_forward_cache;
Cache<dnnl::inner_product_backward_data> linear_backward_data_cache;
Cache<dnnl::inner_product_backward_weights> linear_backward_weights_cache;

// ----------------------------------------------------------------------------------------
// Primitives.

class ReluBackward : public mx::UnaryPrimitive {
 public:
  explicit ReluBackward(mx::Stream stream) : mx::UnaryPrimitive(stream) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& dy = inputs[0];
    const auto& y = inputs[1];
    allocate(out);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(dy);
    encoder.set_input_array(y);
    encoder.set_output_array(out);
    encoder.dispatch([dyi = Input(dy), yi = Input(y), dx = out.data<float>(),
                      size = static_cast<long>(out.size())]() mutable {
      const float* dy = dyi.get<float>();
      const float* y = yi.get<float>();
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
      prim->execute(s, {{DNNL_ARG_DIFF_DST, make_memory(md, dy)},
                        {DNNL_ARG_DST, make_memory(md, y)},
                        {DNNL_ARG_DIFF_SRC, make_memory(md, dx)}});
      s.wait();
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("[dqn_mlx_onednn] ReluBackward runs on the CPU only.");
  }
  const char* name() const override { return "OnednnReluBackward"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

// dL/d(pre-activation) from dL/d(output), given the layer's output.
mx::array relu_backward(const mx::array& dy, const mx::array& y, const mx::Stream& s) {
  return mx::array(y.shape(), mx::float32, std::make_shared<ReluBackward>(s),
                   {dy, y});
}

class Conv2dBackwardData : public mx::UnaryPrimitive {
 public:
  Conv2dBackwardData(mx::Stream stream, int stride) : mx::UnaryPrimitive(stream), stride_(stride) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& dx) override {
    const auto& dpre = inputs[0];
    const auto& w = inputs[1];
    allocate(dx);
    ConvShape g = conv_shape(dx.shape(0), dx.shape(1), dx.shape(2), dx.shape(3), w.shape(0),
                             w.shape(1), stride_);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(dpre);
    encoder.set_input_array(w);
    encoder.set_output_array(dx);
    encoder.dispatch([g, dyi = Input(dpre), wi = Input(w), dxp = dx.data<float>()]() mutable {
      const float* dy = dyi.get<float>();
      const float* wp = wi.get<float>();
      auto p = conv_backward_data(g);
      auto& s = thread_stream();
      std::vector<char> scratch;
      memory weights = reordered(p->weights, wp, scratch, s);
      p->prim.execute(s, {{DNNL_ARG_DIFF_DST, make_memory({g.dst(), dt::f32, tag::nhwc}, dy)},
                          {DNNL_ARG_WEIGHTS, weights},
                          {DNNL_ARG_DIFF_SRC, make_memory({g.src(), dt::f32, tag::nhwc}, dxp)}});
      s.wait();
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("[dqn_mlx_onednn] Conv2dBackwardData runs on the CPU only.");
  }
  const char* name() const override { return "OnednnConv2dBackwardData"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return stride_ == static_cast<const Conv2dBackwardData&>(other).stride_;
  }

 private:
  int stride_;
};

class Conv2dBackwardWeights : public mx::Primitive {
 public:
  Conv2dBackwardWeights(mx::Stream stream, int stride) : mx::Primitive(stream), stride_(stride) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& x = inputs[0];  // (N, H, W, C) float32
    const auto& dpre = inputs[1];
    auto& dw = outputs[0];
    auto& db = outputs[1];
    allocate(dw);
    allocate(db);
    ConvShape g = conv_shape(x.shape(0), x.shape(1), x.shape(2), x.shape(3), dw.shape(0),
                             dw.shape(1), stride_);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(dpre);
    encoder.set_output_array(dw);
    encoder.set_output_array(db);
    encoder.dispatch([g, xi = Input(x), dyi = Input(dpre), dwp = dw.data<float>(),
                      dbp = db.data<float>()]() mutable {
      const float* xp = xi.get<float>();
      const float* dy = dyi.get<float>();
      auto p = conv_backward_weights(g);
      auto& s = thread_stream();
      memory::desc mlx_layout(g.weights(), dt::f32, tag::ohwi);
      std::vector<char> scratch;
      memory grad = make_memory(mlx_layout, dwp);
      if (p->weights.needed) {
        scratch.resize(p->weights.from.get_size());
        grad = make_memory(p->weights.from, scratch.data());
      }
      p->prim.execute(s, {{DNNL_ARG_SRC, make_memory({g.src(), dt::f32, tag::nhwc}, xp)},
                          {DNNL_ARG_DIFF_DST, make_memory({g.dst(), dt::f32, tag::nhwc}, dy)},
                          {DNNL_ARG_DIFF_WEIGHTS, grad},
                          {DNNL_ARG_DIFF_BIAS, make_memory({{g.o}, dt::f32, tag::a}, dbp)}});
      if (p->weights.needed) {
        memory out = make_memory(mlx_layout, dwp);
        p->weights.prim.execute(s, grad, out);
      }
      s.wait();
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("[dqn_mlx_onednn] Conv2dBackwardWeights runs on the CPU only.");
  }
  const char* name() const override { return "OnednnConv2dBackwardWeights"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return stride_ == static_cast<const Conv2dBackwardWeights&>(other).stride_;
  }

 private:
  int stride_;
};

class Conv2d : public mx::Primitive {
 public:
  // ``pixels``: the input is (N, C, H, W) uint8, and a second output keeps it as (N, H, W, C)
  // float32 for the weight gradient.
  Conv2d(mx::Stream stream, int stride, bool relu, bool pixels)
      : mx::Primitive(stream), stride_(stride), relu_(relu), pixels_(pixels) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& x = inputs[0];
    const auto& w = inputs[1];
    const auto& b = inputs[2];
    auto& y = outputs[0];
    allocate(y);
    long n = x.shape(0);
    long h = pixels_ ? x.shape(2) : x.shape(1);
    long wd = pixels_ ? x.shape(3) : x.shape(2);
    long c = pixels_ ? x.shape(1) : x.shape(3);
    ConvShape g = conv_shape(n, h, wd, c, w.shape(0), w.shape(1), stride_);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(w);
    encoder.set_input_array(b);
    encoder.set_output_array(y);
    float* converted = nullptr;
    if (pixels_) {
      allocate(outputs[1]);
      encoder.set_output_array(outputs[1]);
      converted = outputs[1].data<float>();
    }
    encoder.dispatch([g, relu = relu_, xi = Input(x), converted, wi = Input(w), bi = Input(b),
                      yp = y.data<float>()]() mutable {
      const float* wp = wi.get<float>();
      const float* bp = bi.get<float>();
      auto p = conv_forward(g, relu);
      auto& s = thread_stream();
      const void* input = nullptr;
      if (converted == nullptr) {
        input = xi.get<float>();
      } else {
        pixels_to_nhwc(xi.get<uint8_t>(), converted, g.n, g.c, g.h, g.w);
        input = converted;
      }
      std::vector<char> scratch;
      memory weights = reordered(p->weights, wp, scratch, s);
      p->prim.execute(s, {{DNNL_ARG_SRC, make_memory({g.src(), dt::f32, tag::nhwc}, input)},
                          {DNNL_ARG_WEIGHTS, weights},
                          {DNNL_ARG_BIAS, make_memory({{g.o}, dt::f32, tag::a}, bp)},
                          {DNNL_ARG_DST, make_memory({g.dst(), dt::f32, tag::nhwc}, yp)}});
      s.wait();
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("[dqn_mlx_onednn] Conv2d runs on the CPU only.");
  }

  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override {
    const auto& x = primals[0];
    const auto& w = primals[1];
    auto s = stream();
    mx::array dpre = relu_ ? relu_backward(cotangents[0], outputs[0], s)
                           : cotangents[0];
    std::vector<mx::array> weight_grads;
    std::vector<mx::array> grads;
    for (int arg : argnums) {
      if (arg == 0) {
        if (pixels_) {
          grads.push_back(mx::zeros_like(x, s));  // pixels are data, not parameters
        } else {
          grads.push_back(mx::array(x.shape(), mx::float32,
                                    std::make_shared<Conv2dBackwardData>(s, stride_), {dpre, w}));
        }
        continue;
      }
      if (weight_grads.empty()) {
        weight_grads = mx::array::make_arrays(
            {w.shape(), {w.shape(0)}}, {mx::float32, mx::float32},
            std::make_shared<Conv2dBackwardWeights>(s, stride_),
            {pixels_ ? outputs[1] : x, dpre});
      }
      grads.push_back(weight_grads[arg == 1 ? 0 : 1]);
    }
    return grads;
  }

  const char* name() const override { return "OnednnConv2d"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const Conv2d&>(other);
    return stride_ == o.stride_ && relu_ == o.relu_ && pixels_ == o.pixels_;
  }

 private:
  int stride_;
  bool relu_;
  bool pixels_;
};

class LinearBackwardData : public mx::UnaryPrimitive {
 public:
  explicit LinearBackwardData(mx::Stream stream) : mx::UnaryPrimitive(stream) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& dx) override {
    const auto& dpre = inputs[0];
    const auto& w = inputs[1];
    allocate(dx);
    LinearShape g{dx.shape(0), dx.shape(1), w.shape(0)};
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(dpre);
    encoder.set_input_array(w);
    encoder.set_output_array(dx);
    encoder.dispatch([g, dyi = Input(dpre), wi = Input(w), dxp = dx.data<float>()]() mutable {
      const float* dy = dyi.get<float>();
      const float* wp = wi.get<float>();
      auto prim = linear_backward_data_cache.get(g.key(false), [&] {
        return dnnl::inner_product_backward_data(dnnl::inner_product_backward_data::primitive_desc(
            cpu_engine(), memory::desc({g.n, g.i}, dt::f32, tag::ab),
            memory::desc({g.o, g.i}, dt::f32, tag::ab), memory::desc({g.n, g.o}, dt::f32, tag::ab),
            linear_forward_pd(g, false)));
      });
      auto& s = thread_stream();
      prim->execute(s, {{DNNL_ARG_DIFF_DST, make_memory({{g.n, g.o}, dt::f32, tag::ab}, dy)},
                        {DNNL_ARG_WEIGHTS, make_memory({{g.o, g.i}, dt::f32, tag::ab}, wp)},
                        {DNNL_ARG_DIFF_SRC, make_memory({{g.n, g.i}, dt::f32, tag::ab}, dxp)}});
      s.wait();
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("[dqn_mlx_onednn] LinearBackwardData runs on the CPU only.");
  }
  const char* name() const override { return "OnednnLinearBackwardData"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class LinearBackwardWeights : public mx::Primitive {
 public:
  explicit LinearBackwardWeights(mx::Stream stream) : mx::Primitive(stream) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& x = inputs[0];
    const auto& dpre = inputs[1];
    auto& dw = outputs[0];
    auto& db = outputs[1];
    allocate(dw);
    allocate(db);
    LinearShape g{x.shape(0), x.shape(1), dw.shape(0)};
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(dpre);
    encoder.set_output_array(dw);
    encoder.set_output_array(db);
    encoder.dispatch([g, xi = Input(x), dyi = Input(dpre), dwp = dw.data<float>(),
                      dbp = db.data<float>()]() mutable {
      const float* xp = xi.get<float>();
      const float* dy = dyi.get<float>();
      auto prim = linear_backward_weights_cache.get(g.key(false), [&] {
        return dnnl::inner_product_backward_weights(
            dnnl::inner_product_backward_weights::primitive_desc(
                cpu_engine(), memory::desc({g.n, g.i}, dt::f32, tag::ab),
                memory::desc({g.o, g.i}, dt::f32, tag::ab), memory::desc({g.o}, dt::f32, tag::a),
                memory::desc({g.n, g.o}, dt::f32, tag::ab), linear_forward_pd(g, false)));
      });
      auto& s = thread_stream();
      prim->execute(s, {{DNNL_ARG_SRC, make_memory({{g.n, g.i}, dt::f32, tag::ab}, xp)},
                        {DNNL_ARG_DIFF_DST, make_memory({{g.n, g.o}, dt::f32, tag::ab}, dy)},
                        {DNNL_ARG_DIFF_WEIGHTS, make_memory({{g.o, g.i}, dt::f32, tag::ab}, dwp)},
                        {DNNL_ARG_DIFF_BIAS, make_memory({{g.o}, dt::f32, tag::a}, dbp)}});
      s.wait();
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("[dqn_mlx_onednn] LinearBackwardWeights runs on the CPU only.");
  }
  const char* name() const override { return "OnednnLinearBackwardWeights"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class Linear : public mx::UnaryPrimitive {
 public:
  Linear(mx::Stream stream, bool relu) : mx::UnaryPrimitive(stream), relu_(relu) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& y) override {
    const auto& x = inputs[0];
    const auto& w = inputs[1];
    const auto& b = inputs[2];
    allocate(y);
    LinearShape g{x.shape(0), x.shape(1), w.shape(0)};
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(w);
    encoder.set_input_array(b);
    encoder.set_output_array(y);
    encoder.dispatch([g, relu = relu_, xi = Input(x), wi = Input(w), bi = Input(b),
                      yp = y.data<float>()]() mutable {
      const float* xp = xi.get<float>();
      const float* wp = wi.get<float>();
      const float* bp = bi.get<float>();
      auto prim = linear_forward_cache.get(g.key(relu), [&] {
        return dnnl::inner_product_forward(linear_forward_pd(g, relu));
      });
      auto& s = thread_stream();
      prim->execute(s, {{DNNL_ARG_SRC, make_memory({{g.n, g.i}, dt::f32, tag::ab}, xp)},
                        {DNNL_ARG_WEIGHTS, make_memory({{g.o, g.i}, dt::f32, tag::ab}, wp)},
                        {DNNL_ARG_BIAS, make_memory({{g.o}, dt::f32, tag::a}, bp)},
                        {DNNL_ARG_DST, make_memory({{g.n, g.o}, dt::f32, tag::ab}, yp)}});
      s.wait();
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("[dqn_mlx_onednn] Linear runs on the CPU only.");
  }
  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override {
    const auto& x = primals[0];
    const auto& w = primals[1];
    auto s = stream();
    mx::array dpre = relu_ ? relu_backward(cotangents[0], outputs[0], s)
                           : cotangents[0];
    std::vector<mx::array> weight_grads;
    std::vector<mx::array> grads;
    for (int arg : argnums) {
      if (arg == 0) {
        grads.push_back(mx::array(x.shape(), mx::float32,
                                  std::make_shared<LinearBackwardData>(s), {dpre, w}));
        continue;
      }
      if (weight_grads.empty()) {
        weight_grads = mx::array::make_arrays({w.shape(), {w.shape(0)}},
                                              {mx::float32, mx::float32},
                                              std::make_shared<LinearBackwardWeights>(s), {x, dpre});
      }
      grads.push_back(weight_grads[arg == 1 ? 0 : 1]);
    }
    return grads;
  }
  const char* name() const override { return "OnednnLinear"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return relu_ == static_cast<const Linear&>(other).relu_;
  }

 private:
  bool relu_;
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
  auto stream = mx::to_stream(s);
  check(x.ndim() == 2 && w.ndim() == 2 && b.ndim() == 1, "linear: x and w are 2-D, b is 1-D");
  check(x.dtype() == mx::float32 && w.dtype() == mx::float32 && b.dtype() == mx::float32,
        "linear: x, w and b are float32");
  check(x.shape(1) == w.shape(1) && b.shape(0) == w.shape(0), "linear: shapes of x, w, b differ");
  return mx::array({x.shape(0), w.shape(0)}, mx::float32, std::make_shared<Linear>(stream, relu),
                   {x, w, b});
}

void set_num_threads(int n) {
  g_num_threads.store(n < 0 ? 0 : n);
}

int num_threads() {
  return g_num_threads.load();
}

}  // namespace dqn_onednn
