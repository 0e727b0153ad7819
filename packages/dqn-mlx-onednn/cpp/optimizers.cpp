// Each step is one pass over the parameters: split over OpenMP's threads, each range computed
// by a function GCC builds twice (AVX2 and baseline x86-64) and picks between at load time.
#include "optimizers.h"

#include "dense.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

namespace dqn_onednn {

void apply_thread_count();  // layers.cpp: --threads for every oneDNN and OpenMP pass

namespace {

struct AdamConstants {
  float b1, b2, eps;
};

// Each output may be its input's buffer (donated), so element i is read before it is written.
struct Buffers {
  const float *p, *g, *s1, *s2;  // inputs
  float *p_out, *s1_out, *s2_out;
};

__attribute__((target_clones("avx2,fma", "default"))) void adam_range(
    Buffers b, float c1, float c2, AdamConstants k, long begin, long end) {
  const float one_minus_b1 = 1.0f - k.b1, one_minus_b2 = 1.0f - k.b2;
  for (long i = begin; i < end; ++i) {
    float g = b.g[i];
    float m = k.b1 * b.s1[i] + one_minus_b1 * g;
    float v = k.b2 * b.s2[i] + one_minus_b2 * (g * g);
    b.p_out[i] = b.p[i] - (c1 * m) / (std::sqrt(v) * c2 + k.eps);
    b.s1_out[i] = m;
    b.s2_out[i] = v;
  }
}

struct RmsConstants {
  float d1, d2, min_sq;
};

__attribute__((target_clones("avx2,fma", "default"))) void rmsprop_range(
    Buffers b, float lr, RmsConstants k, long begin, long end) {
  const float one_minus_d1 = 1.0f - k.d1, one_minus_d2 = 1.0f - k.d2;
  for (long i = begin; i < end; ++i) {
    float g = b.g[i];
    float a = k.d1 * b.s1[i] + one_minus_d1 * g;
    float a2 = k.d2 * b.s2[i] + one_minus_d2 * (g * g);
    b.p_out[i] = b.p[i] - lr * g / std::sqrt(a2 - a * a + k.min_sq);
    b.s1_out[i] = a;
    b.s2_out[i] = a2;
  }
}

// Splits [0, size) over the threads in cache-line-aligned ranges.
template <typename F>
void parallel_ranges(long size, F f) {
  constexpr long kMinPerThread = 1 << 14;
  int threads = static_cast<int>(std::max(1L, std::min<long>(omp_get_max_threads(),
                                                             size / kMinPerThread)));
#pragma omp parallel num_threads(threads)
  {
    long t = omp_get_thread_num(), n = omp_get_num_threads();
    long chunk = ((size + n - 1) / n + 15) / 16 * 16;
    long begin = std::min(size, t * chunk), end = std::min(size, begin + chunk);
    if (begin < end) {
      f(begin, end);
    }
  }
}

// An output takes its input's buffer when MLX allows it (the input is dense and donatable).
void take_or_allocate(const mx::array& in, mx::array& out) {
  if (in.is_donatable() && Input::is_dense(in) && in.nbytes() == out.nbytes()) {
    out.copy_shared_buffer(in);
  } else {
    out.set_data(mx::allocator::malloc(out.nbytes()));
  }
}

class OptimizerStep : public mx::Primitive {
 public:
  OptimizerStep(mx::Stream stream, bool adam, float k1, float k2, float k3)
      : mx::Primitive(stream), adam_(adam), k1_(k1), k2_(k2), k3_(k3) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    // inputs: p, g, s1, s2, scalar(s); outputs: p', s1', s2'
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) {
      encoder.set_input_array(in);
    }
    for (int i = 0; i < 3; ++i) {
      take_or_allocate(inputs[i == 0 ? 0 : i + 1], outputs[i]);  // p -> p', s1 -> s1', s2 -> s2'
      encoder.set_output_array(outputs[i]);
    }
    encoder.dispatch([adam = adam_, k1 = k1_, k2 = k2_, k3 = k3_, p = Input(inputs[0]),
                      g = Input(inputs[1]), s1 = Input(inputs[2]), s2 = Input(inputs[3]),
                      x1 = Input(inputs[4]), x2 = Input(inputs[adam_ ? 5 : 4]),
                      p_out = outputs[0].data<float>(), s1_out = outputs[1].data<float>(),
                      s2_out = outputs[2].data<float>(),
                      size = static_cast<long>(outputs[0].size())]() mutable {
      apply_thread_count();
      Buffers b{p.get<float>(), g.get<float>(), s1.get<float>(), s2.get<float>(),
                p_out, s1_out, s2_out};
      float c1 = *x1.get<float>(), c2 = *x2.get<float>();
      parallel_ranges(size, [&](long begin, long end) {
        if (adam) {
          adam_range(b, c1, c2, {k1, k2, k3}, begin, end);
        } else {
          rmsprop_range(b, c1, {k1, k2, k3}, begin, end);
        }
      });
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("[dqn_mlx_onednn] optimizer steps run on the CPU only.");
  }
  const char* name() const override { return adam_ ? "OnednnAdamStep" : "OnednnRMSPropStep"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const OptimizerStep&>(other);
    return adam_ == o.adam_ && k1_ == o.k1_ && k2_ == o.k2_ && k3_ == o.k3_;
  }

 private:
  bool adam_;
  float k1_, k2_, k3_;
};

void check(bool ok, const std::string& what) {
  if (!ok) {
    throw std::invalid_argument("[dqn_mlx_onednn] " + what);
  }
}

std::vector<mx::array> step(std::vector<mx::array> inputs, bool adam, float k1, float k2,
                            float k3, mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  const auto& p = inputs[0];
  for (size_t i = 0; i < inputs.size(); ++i) {
    check(inputs[i].dtype() == mx::float32, "optimizer step: every input is float32");
    if (i < 4) {
      check(inputs[i].shape() == p.shape(), "optimizer step: parameter, gradient and state differ in shape");
    } else {
      check(inputs[i].size() == 1, "optimizer step: the step constants are scalars");
    }
  }
  return mx::array::make_arrays({p.shape(), p.shape(), p.shape()},
                                {mx::float32, mx::float32, mx::float32},
                                std::make_shared<OptimizerStep>(stream, adam, k1, k2, k3),
                                std::move(inputs));
}

}  // namespace

std::vector<mx::array> adam_step(const mx::array& p, const mx::array& g, const mx::array& m,
                                 const mx::array& v, const mx::array& c1, const mx::array& c2,
                                 float b1, float b2, float eps, mx::StreamOrDevice s) {
  return step({p, g, m, v, c1, c2}, true, b1, b2, eps, s);
}

std::vector<mx::array> centered_rmsprop_step(const mx::array& p, const mx::array& g,
                                             const mx::array& a, const mx::array& a2,
                                             const mx::array& lr, float d1, float d2,
                                             float min_sq, mx::StreamOrDevice s) {
  return step({p, g, a, a2, lr}, false, d1, d2, min_sq, s);
}

}  // namespace dqn_onednn
