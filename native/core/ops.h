// argument blocks of the basic ops, shared by the CPU backend and the CUDA library
// (vffn_cuda_<name>(device, const XArgs*)). order: outputs, inputs, saved values, sizes.
#pragma once
#include "view.h"

namespace vffn {

// vffn_cuda_copy: dst <- src, same element count, any strides, dtype converted
struct CopyArgs {
  View dst, src;
};

// vffn_cuda_fill
struct FillArgs {
  View dst;
  double value;
};

// vffn_cuda_gemm: c = alpha * op(a) * op(b) + beta * c. 2-D views with unit last stride;
// c is float32 or bfloat16 (accumulated in float32); beta == 0 never reads c.
struct GemmArgs {
  View c, a, b;
  bool trans_a, trans_b;
  float alpha, beta;
};

// vffn_cuda_gemm_rows, the test hook of the GEMM's row gather: c = alpha * a[rows] * op(b) +
// beta * c, a [R, K] K-contiguous, rows int32 [M] on the device (checked against R first),
// c float32 [M, N]. bf16_math: with one bf16 operand, round the other to bf16 (as the layers do)
struct GemmRowsArgs {
  View c, a, rows, b;
  bool trans_b, bf16_math;
  float alpha, beta;
};

}  // namespace vffn
