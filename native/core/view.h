// a tensor as kernels see it: a typed pointer (offset already applied), shape and strides in
// elements. plain data, so it crosses the boundary to the dlopen'ed CUDA library unchanged.
#pragma once
#include <cstdint>

namespace vffn {

constexpr int kMaxDims = 6;

struct View {
  void* data = nullptr;
  int32_t dtype = 0;
  int32_t ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
  }
  int64_t rows() const { return ndim >= 1 ? shape[0] : 1; }
  int64_t cols() const { return ndim >= 2 ? shape[ndim - 1] : 1; }
  // leading dimension of a 2-D view whose last stride is 1
  int64_t ld() const { return ndim >= 2 ? stride[ndim - 2] : (ndim == 1 ? shape[0] : 1); }
  bool contiguous() const {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
      if (shape[i] != 1 && stride[i] != s) return false;
      s *= shape[i];
    }
    return true;
  }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
};

}  // namespace vffn
