// CPU GEMM, the workhorse of every layer: C = alpha * op(A) * op(B) + beta * C, float32
// accumulation, float32 or bfloat16 operands. M, N, K are the sizes of op(A) [M,K], op(B) [K,N].
#pragma once
#include <cstdint>

namespace vffn::cpu {

// one operand. element (r, c) of the stored matrix is at data[r * ld + c]; `trans` says the
// stored matrix is the transpose of the operand. `rows` (optional, only when !trans) gathers:
// logical row i of the operand is stored row rows[i], so a GEMM can read scattered tokens.
struct Mat {
  const void* data = nullptr;
  int32_t dtype = 0;  // vffn::F32 or vffn::BF16
  int64_t ld = 0;
  bool trans = false;
  const int32_t* rows = nullptr;
};

// C is float32 with leading dimension ldc. beta == 0 overwrites C without reading it (NaN-safe).
// parallel=false runs on the calling thread only (for use inside a parallel_for body).
// the summation order of each C element does not depend on the thread count.
void gemm(int64_t M, int64_t N, int64_t K, float alpha, const Mat& A, const Mat& B, float beta, float* C,
          int64_t ldc, bool parallel = true);

// op(B) packed whole for the packed path (M > 8): the panels gemm would pack on every call, made
// once. K block pc of the panel at column j (a multiple of the kernel's nr) is at pc * npad + j * kb
// (kb the block's depth); npad is N rounded up to nr. The same values as packing per call, so the
// results are the same bits.
struct PackedB {
  const float* data = nullptr;
  int64_t npad = 0;
};
// floats pack_b_all writes for an op(B) of [K, N]
int64_t packed_b_floats(int64_t N, int64_t K);
void pack_b_all(int64_t N, int64_t K, const Mat& B, float* dst);
// where gemm finds packed copies of its op(B) (stored transposed, no row gather) on this thread:
// set by a recorded step's replay for its ops (graph.cpp); null (the default) packs per call.
// only top-level calls (parallel = true) ask.
using PackedBSource = PackedB (*)(const Mat& B, int64_t N, int64_t K);
void set_packed_b_source(PackedBSource f);

// which micro-kernel gemm uses on this machine ("avx2-fma" or "portable"; the environment
// variable VFFN_GEMM_KERNEL=portable, read once, forces the portable one).
const char* gemm_kernel_name();
// the small-M (decoding) kernel: "avx512", "avx2" or "portable"
const char* gemm_small_kernel_name();

}  // namespace vffn::cpu
