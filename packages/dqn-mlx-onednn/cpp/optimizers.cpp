// Each step is one pass over the parameters: split over OpenMP's threads, each range computed
// by a function GCC builds twice (AVX2 and baseline x86-64) and picks between at load time.
// CMakeLists.txt builds this file with -fno-math-errno, so that the loops' square roots
// vectorize (with errno kept, GCC guards each sqrt with a scalar branch).
#include "optimizers.h"

#include <omp.h>
#include <pmmintrin.h>  // _MM_DENORMALS_ZERO_ON (and, through xmmintrin.h, _MM_FLUSH_ZERO_ON)

#include <algorithm>
#include <cmath>
#include <memory>

#include "primitive.h"

namespace dqn_onednn {

void apply_thread_count();  // layers.cpp: --threads for every oneDNN and OpenMP pass

namespace {

// Each output may be its input's buffer (donated), so element i is read before it is written.
struct Buffers {
  const float *p, *g, *s1, *s2;  // inputs
  float *p_out, *s1_out, *s2_out;
};

// Flush-to-zero and denormals-are-zero in this thread's MXCSR while a range is computed, the
// caller's MXCSR put back after. A moment with no gradient decays geometrically into the
// subnormal floats and stays there for good (Adam's first moment at 4 * 2^-149: 0.9 * 4 rounds
// back to 4), and on Intel cores most multiplications, divisions and square roots that read or
// produce a subnormal take a microcode assist. What reading them as zero changes: a moment by
// less than 2^-125, and a parameter's step by less than 2^-126 / eps (Adam) or
// 2^-126 / sqrt(min_sq) (centered RMSProp). So where a parameter's moments and gradient are all
// zero or subnormal, a parameter of magnitude 2^-74 or more comes out exactly as MLX computes
// it (at Adam's eps 1e-8, MLX's step there is under half its rounding step); elsewhere the
// two differ by rounding. tests/test_onednn_layers.py checks this. The ranges are called through
// a function pointer (target_clones), never inlined into the guarded scope, so the compiler
// cannot move their arithmetic across the MXCSR writes.
class FlushSubnormals {
 public:
  FlushSubnormals() : saved_(_mm_getcsr()) {
    _mm_setcsr(saved_ | _MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON);
  }
  ~FlushSubnormals() { _mm_setcsr(saved_); }
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;

 private:
  unsigned saved_;
};

// A step's constants as MLX's optimizers use them: each decay k and its complement j = 1 - k
// rounded to float from the caller's double, as Python computes (1 - b2) before MLX casts it
// (0.001f; 1.0f - 0.999f would be 0.00099998713f, off by 1.3e-5 relative).
struct Constants {
  float k1, k2, k3, j1, j2;
};

Constants constants(double k1, double k2, double k3) {
  return {static_cast<float>(k1), static_cast<float>(k2), static_cast<float>(k3),
          static_cast<float>(1.0 - k1), static_cast<float>(1.0 - k2)};
}

// Adam: s1, s2 are m, v and k1, k2, k3 are b1, b2, eps.
__attribute__((target_clones("avx2,fma", "default"))) void adam_range(
    Buffers b, float c1, float c2, Constants k, long begin, long end) {
  // Safe: each output is either its input's buffer or apart from every input (see Buffers).
#pragma GCC ivdep
  for (long i = begin; i < end; ++i) {
    float g = b.g[i];
    float m = k.k1 * b.s1[i] + k.j1 * g;
    float v = k.k2 * b.s2[i] + k.j2 * (g * g);
    b.p_out[i] = b.p[i] - (c1 * m) / (std::sqrt(v) * c2 + k.k3);
    b.s1_out[i] = m;
    b.s2_out[i] = v;
  }
}

// Centered RMSProp: s1, s2 are a, a2 and k1, k2, k3 are d1, d2, min_sq; c1 is lr.
__attribute__((target_clones("avx2,fma", "default"))) void rmsprop_range(
    Buffers b, float c1, float, Constants k, long begin, long end) {
  // Safe: each output is either its input's buffer or apart from every input (see Buffers).
#pragma GCC ivdep
  for (long i = begin; i < end; ++i) {
    float g = b.g[i];
    float a = k.k1 * b.s1[i] + k.j1 * g;
    float a2 = k.k2 * b.s2[i] + k.j2 * (g * g);
    b.p_out[i] = b.p[i] - c1 * g / std::sqrt(a2 - a * a + k.k3);
    b.s1_out[i] = a;
    b.s2_out[i] = a2;
  }
}

// Splits [0, size) over the threads in cache-line-aligned ranges.
template <typename F>
void parallel_ranges(long size, F f) {
  constexpr long kMinPerThread = 1 << 14;
  int threads = static_cast<int>(
      std::max(1L, std::min<long>(omp_get_max_threads(), size / kMinPerThread)));
#pragma omp parallel num_threads(threads)
  {
    long t = omp_get_thread_num(), n = omp_get_num_threads();
    long chunk = ((size + n - 1) / n + 15) / 16 * 16;
    long begin = std::min(size, t * chunk), end = std::min(size, begin + chunk);
    if (begin < end) {
      FlushSubnormals flush;
      f(begin, end);
    }
  }
}

// inputs: p, g, s1, s2, c1[, c2]; outputs: p', s1', s2' (in p's, s1's and s2's buffers where
// MLX allows).
class OptimizerStep : public CpuPrimitive {
 public:
  OptimizerStep(mx::Stream stream, bool adam, Constants k)
      : CpuPrimitive(stream, adam ? "OnednnAdamStep" : "OnednnRMSPropStep",
                     {k.k1, k.k2, k.k3, k.j1, k.j2}),
        adam_(adam), k_(k) {}

  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto range = adam_ ? adam_range : rmsprop_range;
    run(in, out,
        [range, k = k_, size = static_cast<long>(out[0].size()),
         c2_at = in.size() - 1](const std::vector<const void*>& x, const std::vector<void*>& y) {
          apply_thread_count();
          auto f = [](const void* a) { return static_cast<const float*>(a); };
          Buffers b{f(x[0]), f(x[1]), f(x[2]), f(x[3]), static_cast<float*>(y[0]),
                    static_cast<float*>(y[1]), static_cast<float*>(y[2])};
          float c1 = *f(x[4]), c2 = *f(x[c2_at]);
          parallel_ranges(size, [&](long begin, long end) {
            range(b, c1, c2, k, begin, end);
          });
        },
        {0, 2, 3});
  }

 private:
  bool adam_;
  Constants k_;
};

std::vector<mx::array> step(std::vector<mx::array> inputs, bool adam, Constants k,
                            mx::StreamOrDevice s) {
  const auto& p = inputs[0];
  for (size_t i = 0; i < inputs.size(); ++i) {
    check(inputs[i].dtype() == mx::float32, "optimizer step: every input is float32");
    check(i >= 4 || inputs[i].shape() == p.shape(),
          "optimizer step: parameter, gradient and state differ in shape");
    check(i < 4 || inputs[i].size() == 1, "optimizer step: the step constants are scalars");
  }
  return mx::array::make_arrays({p.shape(), p.shape(), p.shape()},
                                {mx::float32, mx::float32, mx::float32},
                                std::make_shared<OptimizerStep>(mx::to_stream(s), adam, k),
                                std::move(inputs));
}

}  // namespace

std::vector<mx::array> adam_step(const mx::array& p, const mx::array& g, const mx::array& m,
                                 const mx::array& v, const mx::array& c1, const mx::array& c2,
                                 double b1, double b2, double eps, mx::StreamOrDevice s) {
  return step({p, g, m, v, c1, c2}, true, constants(b1, b2, eps), s);
}

std::vector<mx::array> centered_rmsprop_step(const mx::array& p, const mx::array& g,
                                             const mx::array& a, const mx::array& a2,
                                             const mx::array& lr, double d1, double d2,
                                             double min_sq, mx::StreamOrDevice s) {
  return step({p, g, a, a2, lr}, false, constants(d1, d2, min_sq), s);
}

}  // namespace dqn_onednn
