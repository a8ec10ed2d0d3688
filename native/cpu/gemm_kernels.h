// the pieces of the packed GEMM that differ per instruction set: the register-blocked
// micro-kernel and the packing routines. gemm.cpp drives them (blocking, edges, threads).
#pragma once
#include <cstdint>

#include "gemm.h"

namespace vffn::cpu {

// packed layouts. A block: micro-panels of MR rows, each stored k-major (a[k * MR + i]).
// B panel: micro-panels of NR columns, each stored k-major (b[k * NR + j]). rows/columns past
// the matrix edge are packed as zeros so the micro-kernel always computes a full tile.
struct GemmKernel {
  const char* name;
  int mr, nr;          // micro-tile
  int64_t mc, kc, nc;  // cache blocking (multiples of mr / nr); kc fixes the summation order
  // C[0:mr, 0:nr] = alpha * sum_k a[k] b[k] + beta * C (beta == 0: C is not read). the epilogue
  // is r = alpha * acc, then r = beta * c + r when beta != 0 (fused in the AVX2 kernel); edge
  // tiles run the same kernel on a scratch tile, so every element gets the same arithmetic.
  void (*micro)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta);
  // pack op(A)[i0 : i0 + m, p0 : p0 + k] into micro-panels of mr rows (m padded up to mr)
  void (*pack_a)(const Mat& A, int64_t i0, int64_t m, int64_t p0, int64_t k, float* dst);
  // pack op(B)[p0 : p0 + k, j0 : j0 + n] into micro-panels of nr columns (n padded up to nr)
  void (*pack_b)(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, float* dst);
  // optional: the first `rows` (< mr) rows of a full-width tile, each element with micro's exact
  // arithmetic (a bottom edge computed without the padded rows); nullptr: edges use a scratch tile
  void (*micro_rows)(int rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta) = nullptr;
};

// scalar packing for any dtype / transpose / gather into panels of mr rows or nr columns
void gemm_pack_a_generic(const Mat& A, int64_t i0, int64_t m, int64_t p0, int64_t k, int mr, float* dst);
void gemm_pack_b_generic(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, int nr, float* dst);

// nullptr when the build or the machine lacks the instruction set
const GemmKernel* gemm_kernel_avx2();

#if defined(__x86_64__)
// whether this machine runs AVX2 and FMA: what every *_avx2() lookup checks before it hands out
// a kernel compiled with -mavx2 -mfma
inline bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
// and AVX-512 F, DQ, BW and VL: what the *_avx512() lookups check
inline bool cpu_has_avx512() {
  __builtin_cpu_init();
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#endif

// small-M path (decoding: a few rows against big weights), no packing. C[0:M, n0:n1] = alpha *
// a * op(B)[:, n0:n1] + beta * C, with a[i] pointing at K contiguous floats (row i of op(A)) and
// B read in place (f32 or bf16, trans or plain with an optional row gather). every C element is
// summed in an order fixed by K alone (B^T: 8 lanes over k in blocks of 512 — float32 lane l
// takes element l of every 8, bfloat16 lane l the pair 2l, 2l + 1 of every 16, the even and the
// odd products in two sums added at the block's end — lanes added
// pairwise, then the k tail; plain B: k in order in blocks of 64, the blocks added up), whatever n0, n1
// and the element's position in a register block.
constexpr int64_t kGemmSmallM = 8;  // M up to this takes the small-M path (measured, bench/README.md)
using GemmSmallFn = void (*)(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a,
                             const Mat& B, float beta, float* C, int64_t ldc);
void gemm_small_portable(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a,
                         const Mat& B, float beta, float* C, int64_t ldc);
GemmSmallFn gemm_small_avx2();  // nullptr when the build or the machine lacks AVX2 + FMA
// B^T at M = 3..8 with AVX-512 registers, the same bits as gemm_small_avx2 (which it calls for
// the rest); nullptr when the build or the machine lacks AVX-512 F/DQ/BW/VL or AVX2 + FMA
GemmSmallFn gemm_small_avx512();

}  // namespace vffn::cpu
