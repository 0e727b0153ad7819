// An input as the kernels read it: row-major and dense.
#pragma once

#include <cstring>
#include <vector>

#include "mlx/array.h"
#include "mlx/backend/common/utils.h"

namespace dqn_onednn {

// MLX hands a primitive its inputs as they are: broadcasts (zeros_like, the gradient of a sum),
// transposed or sliced views. Those are copied to a dense buffer by ``get``, which runs in the
// dispatched task, once the input's data exists; a dense input is read in place.
class Input {
 public:
  explicit Input(const mlx::core::array& a)
      : data_(a.data<char>()),
        shape_(a.shape()),
        strides_(a.strides()),
        itemsize_(a.itemsize()),
        size_(a.size()),
        dense_(a.flags().row_contiguous && a.data_size() == a.size()) {}

  static bool is_dense(const mlx::core::array& a) {
    return a.flags().row_contiguous && a.data_size() == a.size();
  }

  template <typename T>
  const T* get() {
    if (dense_) {
      return reinterpret_cast<const T*>(data_);
    }
    if (copy_.empty()) {
      copy_.resize(size_ * itemsize_);
      for (size_t i = 0; i < size_; ++i) {
        auto at = mlx::core::elem_to_loc(static_cast<int>(i), shape_, strides_);
        std::memcpy(copy_.data() + i * itemsize_, data_ + at * itemsize_, itemsize_);
      }
    }
    return reinterpret_cast<const T*>(copy_.data());
  }

 private:
  const char* data_;
  mlx::core::Shape shape_;
  mlx::core::Strides strides_;
  size_t itemsize_;
  size_t size_;
  bool dense_;
  std::vector<char> copy_;
};

}  // namespace dqn_onednn
