// What every primitive of this module shares: it runs on the CPU only, reads its inputs dense
// and row-major, and runs as one task on its stream once its inputs' data exist.
#pragma once

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/common/utils.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

namespace dqn_onednn {

namespace mx = mlx::core;

inline void check(bool ok, const std::string& what) {
  if (!ok) {
    throw std::invalid_argument("[dqn_mlx_onednn] " + what);
  }
}

inline bool is_dense(const mx::array& a) {
  return a.flags().row_contiguous && a.data_size() == a.size();
}

// MLX hands a primitive its inputs as they are: broadcasts (zeros_like, the gradient of a sum),
// transposed or sliced views. ``get`` (called in the task, once the data exist) copies those to
// a dense buffer; a dense input is read in place.
class Input {
 public:
  explicit Input(const mx::array& a)
      : data_(a.data<char>()), shape_(a.shape()), strides_(a.strides()), itemsize_(a.itemsize()),
        size_(a.size()), dense_(is_dense(a)) {}

  const void* get() {
    if (!dense_ && copy_.empty()) {
      copy_.resize(size_ * itemsize_);
      for (size_t i = 0; i < size_; ++i) {
        auto at = mx::elem_to_loc(static_cast<int>(i), shape_, strides_);
        std::memcpy(copy_.data() + i * itemsize_, data_ + at * itemsize_, itemsize_);
      }
    }
    return dense_ ? data_ : copy_.data();
  }

 private:
  const char* data_;
  mx::Shape shape_;
  mx::Strides strides_;
  size_t itemsize_, size_;
  bool dense_;
  std::vector<char> copy_;
};

// A primitive is equal to another of its kind with the same parameters.
class CpuPrimitive : public mx::Primitive {
 public:
  CpuPrimitive(mx::Stream stream, const char* kind, std::vector<float> params)
      : mx::Primitive(stream), kind_(kind), params_(std::move(params)) {}
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string("[dqn_mlx_onednn] ") + kind_ + " runs on the CPU only.");
  }
  const char* name() const override { return kind_; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const CpuPrimitive&>(other);
    return std::strcmp(kind_, o.kind_) == 0 && params_ == o.params_;
  }

 protected:
  // Gives each output memory (output i takes input ``reuse[i]``'s buffer where MLX allows it:
  // dense, donatable, the same size) and dispatches ``body(x, y)``, with x[i] input i's dense
  // data and y[i] output i's.
  template <typename Body>
  void run(const std::vector<mx::array>& in, std::vector<mx::array>& out, Body body,
           const std::vector<size_t>& reuse = {}) {
    auto& encoder = mx::cpu::get_command_encoder(stream());
    std::vector<Input> inputs;
    for (const auto& a : in) {
      encoder.set_input_array(a);
      inputs.emplace_back(a);
    }
    std::vector<void*> y;
    for (size_t i = 0; i < out.size(); ++i) {
      const mx::array* donor = i < reuse.size() ? &in[reuse[i]] : nullptr;
      if (donor && donor->is_donatable() && is_dense(*donor) && donor->nbytes() == out[i].nbytes()) {
        out[i].copy_shared_buffer(*donor);
      } else {
        out[i].set_data(mx::allocator::malloc(out[i].nbytes()));
      }
      encoder.set_output_array(out[i]);
      y.push_back(out[i].data<void>());
    }
    encoder.dispatch([inputs = std::move(inputs), y = std::move(y), body]() mutable {
      std::vector<const void*> x;
      for (auto& input : inputs) {
        x.push_back(input.get());
      }
      body(x, y);
    });
  }

 private:
  const char* kind_;
  std::vector<float> params_;
};

}  // namespace dqn_onednn
