// GEMM on tensor cores: c[M,N] = alpha * op(a)[M,K] * op(b)[K,N] + beta * c, float32 accumulate,
// plus what the FFN layers fuse into it (see GemmSpec in common.cuh): a row gather on a, the
// SwiGLU epilogue, expert slices as offsets into shared matrices, groups of rows or of K read
// from device memory, and a device-side row count. every output element is written by one
// thread (no atomics), so results are the same bits on every run.
// block tile 128x128, 8 warps of 64x32, K in 64-byte slices, two shared-memory stages.
// both operands land in shared memory K-contiguous ("[row][k]") whatever their layout, so one
// fragment path serves every transpose:
//   bf16 operands    -> ldmatrix + mma.sync m16n8k16 bf16 (bf16 in, fp32 accumulate)
//   any float32 side -> lds + mma.sync m16n8k8 tf32, bf16 operands widened exactly. tf32 rather
//                       than rounding to bf16 on load: 10 mantissa bits instead of 7 keep float32
//                       models close to the CPU oracle (~3e-4 relative, not ~3e-3), at half the
//                       bf16 tensor-core rate, which float32 users already trade for precision.
//   GemmSpec::bf16_math with one bf16 side (a bfloat16 model's float32 activations times its
//                       weights) -> the float32 side is rounded to bf16 while loading, as autocast
//                       does: bf16 tensor-core rate, ~3e-3 relative to the exact product.
// loads, per operand (LoadMode below): of the tile's own type and 16-byte aligned, cp.async copies
// global -> shared directly, zero-filling ragged edges, into [row][k] for a K-contiguous operand
// (every x·Wᵀ of the forward) and into [k][row], as stored, for an MN-major one (the backward's
// dY·W and dYᵀ·X), whose fragments come from ldmatrix.trans (bf16) or strided lds (tf32). an
// operand of another dtype (or with unaligned rows) is staged in registers as 16-byte chunks,
// converted, while the tensor cores work on the other stage, and stored in its own layout.
// VFFN_CUDA_GEMM=staged restores the old dispatch, which transposes MN-major operands through
// registers (TS). ragged M, N, K are bounds-checked per chunk. split-K for grids under half a
// wave: per-layer partial sums, added in layer order (deterministic, no atomics).
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../core/ops.h"
#include "common.cuh"

namespace vffn::cuda {

namespace {

constexpr int BM = 128, BN = 128, THREADS = 256;

template <class S>
struct Tile {
  static constexpr int BK = 64 / int(sizeof(S));        // 32 bf16 or 16 float: 64 bytes of K per row
  static constexpr int V = 16 / int(sizeof(S));         // elements per 16-byte chunk
  static constexpr int LDS = BK + V;                    // +16 bytes per row: conflict-free fragment loads
  // an MN-major tile kept as stored, [k][row]: 128 rows + 8 elements of pad, so the 8 k rows an
  // ldmatrix phase reads (bf16: 272-byte pitch) start in 8 different 16-byte bank groups, and
  // the 4 k x 8 rows a tf32 fragment load touches (136 floats: 8 banks apart) are 32 banks
  static constexpr int LDT = BM + 8;
  static constexpr int CHUNKS = BM * BK / V / THREADS;  // chunks per thread per operand (2)
  // one operand's stage: the larger of [BM][LDS] and [BK][LDT]
  static constexpr int STAGE = BM * LDS > BK * LDT ? BM * LDS : BK * LDT;
};

// an operand as the kernel sees it. "rows" are the M (a) or N (b) index, k the inner one.
struct Operand {
  const char* p;
  int64_t ld;
  int dtype;
  int kcontig;      // 1: element (row, k) at row*ld + k; 0: at k*ld + row
  int vec_ok;       // ld and base allow aligned vector reads (re-checked after per-block offsets)
  const int* gather;  // kcontig only: logical row i is stored row gather[i]
  int64_t glu_gate;   // b only, kcontig: > 0 selects the SwiGLU tile (gate row j = up row j + glu_gate)
  int slice_rows, slice_k;  // add the group's expert offset o_g to the row / k index
};

struct Out {
  char* c;
  int64_t ldc;
  int dtype;
  int mode;  // GemmSpec::Store, Glu
  float alpha, beta;
  float* h;            // glu: pre-activations [up | gate] (null: not kept)
  int64_t ldh;
  int slice_rows, slice_cols;
};

struct Seg {
  const int* start;  // [count + 1] on the device; null: no groups
  int count, over_k;
  int64_t I, E;      // expert offsets o_g = g*(I-E)/(count-1)
};

struct Problem {
  Operand a, b;
  Out out;
  Seg seg;
  int M, N, K;         // upper bounds; N counts SwiGLU pairs in glu mode
  const int* m_limit;  // rows >= *m_limit are skipped (null: M)
  float* ws;           // split-K: partial sums [gridDim.z][M][N] (null: no split)
  int k_chunk;         // split-K: k per grid layer, a multiple of the tile's BK
};

union Chunk16 {
  uint4 u;
  uint16_t h[8];
  float f[4];
};

template <class S> __device__ __forceinline__ S from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ uint16_t from_float<uint16_t>(float v) { return f32_to_bf16_bits(v); }
__device__ __forceinline__ void chunk_set(Chunk16& c, int i, float v) { c.f[i] = v; }
__device__ __forceinline__ void chunk_set(Chunk16& c, int i, uint16_t v) { c.h[i] = v; }
template <class S> __device__ __forceinline__ S chunk_get(const Chunk16& c, int i);
template <> __device__ __forceinline__ float chunk_get<float>(const Chunk16& c, int i) { return c.f[i]; }
template <> __device__ __forceinline__ uint16_t chunk_get<uint16_t>(const Chunk16& c, int i) { return c.h[i]; }

// two floats as bf16 bits (one cvt.rn.bf16x2.f32), the first in the low half (the lower address)
__device__ __forceinline__ uint32_t pack_bf16(float a, float b) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ int64_t dsize(int dtype) { return dtype == BF16 ? 2 : 4; }

// per-block view of one operand: base pointer after slice/group offsets, the row extent, and
// for K-contiguous operands the stored row of each of this thread's chunks (null: outside)
// KC: the stored layout when the kernel knows it (1 K-contiguous, 0 MN-major), -1 read at run time
template <class S, int KC = -1>
struct Loader {
  static constexpr int BK = Tile<S>::BK, V = Tile<S>::V, LDS = Tile<S>::LDS, CHUNKS = Tile<S>::CHUNKS;
  const char* base;
  int64_t ld;  // elements
  int es, dtype, kcontig_, vec, row0, row_end, K;
  const char* row_ptr[CHUNKS];

  __device__ __forceinline__ bool kc() const { return KC < 0 ? kcontig_ != 0 : KC == 1; }

  // tile coordinates of chunk i: rows rr.. and k offset kk
  __device__ __forceinline__ void pos(int i, int& rr, int& kk) const {
    int c = threadIdx.x + i * THREADS;
    if (kc()) {
      rr = c / (BK / V);
      kk = (c % (BK / V)) * V;
    } else {
      kk = c / (BM / V);
      rr = (c % (BM / V)) * V;
    }
  }

  __device__ __forceinline__ void init(const Operand& op, int64_t row_shift, int64_t k_shift, int row0_, int row_end_,
                                       int K_, int glu_n0) {
    dtype = op.dtype;
    es = dtype == BF16 ? 2 : 4;
    ld = op.ld;
    kcontig_ = op.kcontig;
    row0 = row0_;
    row_end = row_end_;
    K = K_;
    base = op.p + (kc() ? row_shift * ld + k_shift : k_shift * ld + row_shift) * es;
    // a chunk read from global memory: 16 bytes of the tile's own type, 8 (bf16 widened to
    // float) or 32 (float rounded to bf16)
    const int64_t vb = int64_t(Tile<S>::V) * es;
    // per tile: an MN-major operand's chunks start at row0 + a multiple of V, and row groups
    // start tiles at any row, so the tile's first row must be aligned too
    const uintptr_t first = reinterpret_cast<uintptr_t>(base) + (kc() ? 0 : uintptr_t(row0) * uintptr_t(es));
    vec = op.vec_ok && (first % uintptr_t(vb) == 0);
    if (!kc()) return;
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
      int rr, kk;
      pos(i, rr, kk);
      int logical = row0 + rr;
      int64_t stored = logical;
      if (op.glu_gate > 0) {  // tile rows alternate 8 up rows, 8 gate rows of the same 8 columns
        const int q = rr >> 3;
        logical = glu_n0 + (q >> 1) * 8 + (rr & 7);
        stored = logical + ((q & 1) ? op.glu_gate : 0);
      } else if (op.gather && logical < row_end) {
        stored = op.gather[logical];
      }
      row_ptr[i] = logical < row_end ? base + stored * ld * es : nullptr;
    }
  }

  // global -> registers, converted to S, zero outside the matrix
  __device__ __forceinline__ void load(int k0, Chunk16 (&r)[CHUNKS]) const {
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
      int rr, kk;
      pos(i, rr, kk);
      const int k = k0 + kk, row = row0 + rr;
      // the chunk's first element and how many of its V elements lie inside the matrix
      const char* at;
      int n_ok;
      if (kc()) {
        at = row_ptr[i] ? row_ptr[i] + int64_t(k) * es : nullptr;
        n_ok = at ? min(max(K - k, 0), V) : 0;
      } else {
        at = k < K ? base + (int64_t(k) * ld + row) * es : nullptr;
        n_ok = at ? min(max(row_end - row, 0), V) : 0;
      }
      if (vec && n_ok == V) {
        if ((dtype == BF16) == (sizeof(S) == 2)) {
          r[i].u = __ldg(reinterpret_cast<const uint4*>(at));
        } else if (sizeof(S) == 2) {  // float operand in a bf16 tile: 32 bytes, rounded to nearest even
          const float4 lo = __ldg(reinterpret_cast<const float4*>(at)), hi = __ldg(reinterpret_cast<const float4*>(at) + 1);
          r[i].u = make_uint4(pack_bf16(lo.x, lo.y), pack_bf16(lo.z, lo.w), pack_bf16(hi.x, hi.y), pack_bf16(hi.z, hi.w));
        } else {  // bf16 operand in a float tile: 8 bytes, widened exactly
          uint2 w = __ldg(reinterpret_cast<const uint2*>(at));
          r[i].f[0] = __uint_as_float(w.x << 16);
          r[i].f[1] = __uint_as_float(w.x & 0xffff0000u);
          r[i].f[2] = __uint_as_float(w.y << 16);
          r[i].f[3] = __uint_as_float(w.y & 0xffff0000u);
        }
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) {
          float x = 0.f;
          if (v < n_ok)
            x = dtype == BF16 ? bf16_bits_to_f32(*reinterpret_cast<const uint16_t*>(at + v * es))
                              : *reinterpret_cast<const float*>(at + v * es);
          chunk_set(r[i], v, from_float<S>(x));
        }
      }
    }
  }

  // registers -> shared tile [row][k] (an MN-major operand is transposed on the way: the old
  // register-staged path, VFFN_CUDA_GEMM=staged)
  __device__ __forceinline__ void store(S* sm, const Chunk16 (&r)[CHUNKS]) const {
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
      int rr, kk;
      pos(i, rr, kk);
      if (kc()) {
        *reinterpret_cast<uint4*>(sm + rr * LDS + kk) = r[i].u;
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) sm[(rr + v) * LDS + kk] = chunk_get<S>(r[i], v);
      }
    }
  }

  // global -> shared with cp.async (K-contiguous, of type S, aligned: the host made sure);
  // a ragged edge copies only the bytes inside the matrix and cp.async zero-fills the rest
  __device__ __forceinline__ void copy_async(int k0, S* sm) const {
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
      int rr, kk;
      pos(i, rr, kk);
      const int k = k0 + kk;
      const int n_ok = row_ptr[i] ? min(max(K - k, 0), V) : 0;
      const char* src = n_ok ? row_ptr[i] + int64_t(k) * es : base;
      uint32_t dst = uint32_t(__cvta_generic_to_shared(sm + rr * LDS + kk));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n_ok * int(sizeof(S))));
    }
  }

  // registers -> shared tile in the operand's own layout: [row][k] (pitch LDS) for K-contiguous,
  // [k][row] (pitch LDT) for MN-major; 16-byte stores either way (the converting path)
  __device__ __forceinline__ void store_natural(S* sm, const Chunk16 (&r)[CHUNKS]) const {
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
      int rr, kk;
      pos(i, rr, kk);
      *reinterpret_cast<uint4*>(sm + (kc() ? rr * LDS + kk : kk * Tile<S>::LDT + rr)) = r[i].u;
    }
  }

  // global -> shared [k][row] with cp.async for an MN-major operand of type S (the host checked
  // base, ld and every row shift for 16-byte alignment; tiles start at multiples of V rows). each
  // chunk is V consecutive rows of one k: a ragged row edge copies the rows inside, a k past the
  // end copies nothing; cp.async zero-fills the rest
  __device__ __forceinline__ void copy_async_mn(int k0, S* sm) const {
#pragma unroll
    for (int i = 0; i < CHUNKS; i++) {
      int rr, kk;
      pos(i, rr, kk);
      const int k = k0 + kk, row = row0 + rr;
      const int n_ok = k < K ? min(max(row_end - row, 0), V) : 0;
      const char* src = n_ok ? base + (int64_t(k) * ld + row) * es : base;
      uint32_t dst = uint32_t(__cvta_generic_to_shared(sm + kk * Tile<S>::LDT + rr));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n_ok * int(sizeof(S))));
    }
  }
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  uint32_t a = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// the same four 8x8 matrices, each transposed on the way: from a [k][row] tile, lane i of a
// matrix receives elements (k 2(i%4), 2(i%4)+1; row i/4), which is what mma.sync wants
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  uint32_t a = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ uint32_t to_tf32(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return r;
}

// one BK slice of the warp's 64x32 tile: 4 m16 tiles x 4 n8 tiles. AT / BT: the tile is kept
// [k][row] (pitch LDT, an MN-major operand as stored) rather than [row][k] (pitch LDS).
// fragments (PTX ISA, mma.m16n8k16 bf16): a reg 0..3 = (rows 0-7 | 8-15) x (k 0-7 | 8-15) in the
// order (0-7,0-7), (8-15,0-7), (0-7,8-15), (8-15,8-15); b reg 0, 1 = k 0-7, 8-15 of n 0-7
template <bool AT, bool BT>
__device__ __forceinline__ void mma_slice(float (&acc)[4][4][4], const uint16_t* As, const uint16_t* Bs, int wm, int wn) {
  constexpr int LDS = Tile<uint16_t>::LDS, LDT = Tile<uint16_t>::LDT;
  const int lane = threadIdx.x & 31;
  // ldmatrix: lanes 8j..8j+7 give the 8 row addresses of matrix j
  const int r8 = lane & 7, j = lane >> 3;
#pragma unroll
  for (int ks = 0; ks < Tile<uint16_t>::BK; ks += 16) {
    uint32_t af[4][4], bf[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; mi++) {
      const int m = wm * 64 + mi * 16;
      if constexpr (AT)  // matrix j: k ks + (j>>1)*8 + r8, rows m + (j&1)*8 ..+7
        ldmatrix_x4_trans(af[mi], As + (ks + (j >> 1) * 8 + r8) * LDT + m + (j & 1) * 8);
      else
        ldmatrix_x4(af[mi], As + (m + (lane & 15)) * LDS + ks + (lane >> 4) * 8);
    }
#pragma unroll
    for (int nj = 0; nj < 2; nj++) {
      const int n = wn * 32 + nj * 16;
      uint32_t r[4];
      if constexpr (BT)  // matrix j: k ks + (j&1)*8 + r8, columns n + (j>>1)*8 ..+7
        ldmatrix_x4_trans(r, Bs + (ks + (j & 1) * 8 + r8) * LDT + n + (j >> 1) * 8);
      else
        ldmatrix_x4(r, Bs + (n + (lane & 7) + (lane >> 4) * 8) * LDS + ks + ((lane >> 3) & 1) * 8);
      bf[2 * nj][0] = r[0];
      bf[2 * nj][1] = r[1];
      bf[2 * nj + 1][0] = r[2];
      bf[2 * nj + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
      for (int ni = 0; ni < 4; ni++)
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(acc[mi][ni][0]), "+f"(acc[mi][ni][1]), "+f"(acc[mi][ni][2]), "+f"(acc[mi][ni][3])
            : "r"(af[mi][0]), "r"(af[mi][1]), "r"(af[mi][2]), "r"(af[mi][3]), "r"(bf[ni][0]), "r"(bf[ni][1]));
  }
}

// tf32 m16n8k8: a = (row g, k t), (g+8, t), (g, t+4), (g+8, t+4); b = (k t, n g), (t+4, g).
// [row][k] at pitch 20: banks 20g + t, all 32 distinct; [k][row] at pitch 136: 8t + g, distinct
template <bool AT, bool BT>
__device__ __forceinline__ void mma_slice(float (&acc)[4][4][4], const float* As, const float* Bs, int wm, int wn) {
  constexpr int LDS = Tile<float>::LDS, LDT = Tile<float>::LDT;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  // element (row, k) of a tile and the step of 8 rows / 4 k in it
  constexpr int ARS = AT ? 1 : LDS, AKS = AT ? LDT : 1, BRS = BT ? 1 : LDS, BKS = BT ? LDT : 1;
#pragma unroll
  for (int ks = 0; ks < Tile<float>::BK; ks += 8) {
    uint32_t af[4][4], bf[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; mi++) {
      const float* a = As + (wm * 64 + mi * 16 + g) * ARS + (ks + t) * AKS;
      af[mi][0] = to_tf32(a[0]);
      af[mi][1] = to_tf32(a[8 * ARS]);
      af[mi][2] = to_tf32(a[4 * AKS]);
      af[mi][3] = to_tf32(a[8 * ARS + 4 * AKS]);
    }
#pragma unroll
    for (int ni = 0; ni < 4; ni++) {
      const float* b = Bs + (wn * 32 + ni * 8 + g) * BRS + (ks + t) * BKS;
      bf[ni][0] = to_tf32(b[0]);
      bf[ni][1] = to_tf32(b[4 * BKS]);
    }
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
      for (int ni = 0; ni < 4; ni++)
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(acc[mi][ni][0]), "+f"(acc[mi][ni][1]), "+f"(acc[mi][ni][2]), "+f"(acc[mi][ni][3])
            : "r"(af[mi][0]), "r"(af[mi][1]), "r"(af[mi][2]), "r"(af[mi][3]), "r"(bf[ni][0]), "r"(bf[ni][1]));
  }
}

// how one operand reaches shared memory (a template argument of the kernel):
//   KA  K-contiguous, cp.async into [row][k]            NA  MN-major, cp.async into [k][row]
//   KS  K-contiguous, staged in registers (converted)   NS  MN-major, staged (converted), [k][row]
//   TS  either layout, staged and transposed into [row][k]: the old path for every operand that
//       could not take cp.async, kept selectable (VFFN_CUDA_GEMM=staged) to compare against
enum LoadMode { KA = 0, KS = 1, NA = 2, NS = 3, TS = 4 };
__host__ __device__ constexpr bool mode_async(int m) { return m == KA || m == NA; }
__host__ __device__ constexpr bool mode_mn_tile(int m) { return m == NA || m == NS; }
__host__ __device__ constexpr int mode_kc(int m) { return m == KA || m == KS ? 1 : m == TS ? -1 : 0; }

template <class S, int M_>
__device__ __forceinline__ void fill_async(const Loader<S, mode_kc(M_)>& l, int k0, S* sm) {
  if constexpr (M_ == KA) l.copy_async(k0, sm);
  else l.copy_async_mn(k0, sm);
}
template <class S, int M_>
__device__ __forceinline__ void fill_store(const Loader<S, mode_kc(M_)>& l, S* sm, const Chunk16 (&r)[Tile<S>::CHUNKS]) {
  if constexpr (M_ == TS) l.store(sm, r);
  else l.store_natural(sm, r);
}

// blocks per SM the kernel is built for: two cap registers at 128, which the all-cp.async
// variants and bf16 tiles with one staged (rounded) operand fit without spills; the rest (the old
// transposing path, two staged operands, float tiles widening a bf16 operand) get one block of 8
// warps rather than spilling (scripts/check-cuda.sh checks every variant for both targets)
template <class S, int MA, int MB>
constexpr int min_blocks() {
  const int staged = !mode_async(MA) + !mode_async(MB);
  if (MA == TS || staged == 2) return 1;
  return staged == 0 || sizeof(S) == 2 ? 2 : 1;
}

// S: the shared tile type (uint16_t = bf16 bits, or float for tf32); MA, MB: how a and b load
// (LoadMode; the host checked what cp.async needs: of type S, 16-byte aligned, no misaligning
// per-block offset). split-K (pr.ws set): grid layer z sums k in [z*k_chunk, (z+1)*k_chunk) and
// stores its raw partial sums; splitk_reduce adds them in layer order
template <class S, int MA, int MB>
__global__ void __launch_bounds__(THREADS, min_blocks<S, MA, MB>()) gemm_kernel(const Problem pr) {
  constexpr int BK = Tile<S>::BK, STAGE = Tile<S>::STAGE;
  constexpr bool kAsyncA = mode_async(MA), kAsyncB = mode_async(MB);
  __shared__ alignas(16) S smem[2][2][STAGE];  // [stage][a|b]: 40 KB for either type

  // which rows, which K range, which expert: from the device-side segmentation when given
  int m0, row_end = pr.M, k_begin = 0, K = pr.K, g = 0;
  if (pr.seg.start && !pr.seg.over_k) {
    // row groups: this block is tile (blockIdx.y - tiles before it) of the first group that has it
    int tile = blockIdx.y;
    g = -1;
    for (int e = 0; e < pr.seg.count; e++) {
      const int s = pr.seg.start[e], n = pr.seg.start[e + 1] - s, tiles = (n + BM - 1) / BM;
      if (tile < tiles) {
        g = e;
        m0 = s + tile * BM;
        row_end = s + n;
        break;
      }
      tile -= tiles;
    }
    if (g < 0) return;  // the grid is an upper bound on the tiles
  } else {
    m0 = blockIdx.y * BM;
    if (pr.m_limit) row_end = min(pr.M, *pr.m_limit);
    if (pr.seg.start) {  // K groups: one expert per grid layer
      g = blockIdx.z;
      k_begin = pr.seg.start[g];
      K = pr.seg.start[g + 1] - k_begin;
    } else if (pr.ws) {  // split-K: this layer's share of k (a multiple of BK from the start)
      k_begin = int(blockIdx.z) * pr.k_chunk;
      K = min(pr.k_chunk, pr.K - k_begin);
    }
    if (m0 >= row_end) return;
  }
  const int64_t o = (pr.seg.start && pr.seg.count > 1) ? int64_t(g) * (pr.seg.I - pr.seg.E) / (pr.seg.count - 1) : 0;

  const bool glu = pr.out.mode == GemmSpec::Glu;
  const int n0 = blockIdx.x * (glu ? BN / 2 : BN);
  Loader<S, mode_kc(MA)> la;
  Loader<S, mode_kc(MB)> lb;
  la.init(pr.a, pr.a.slice_rows ? o : 0, (pr.a.slice_k ? o : 0) + k_begin, m0, row_end, K, 0);
  lb.init(pr.b, pr.b.slice_rows ? o : 0, (pr.b.slice_k ? o : 0) + k_begin, n0, pr.N, K, n0);

  const int warp = threadIdx.x >> 5, wm = warp & 1, wn = warp >> 1;
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;

  const int nk = K / BK + (K % BK != 0);  // K + BK - 1 would overflow near INT_MAX
  // staging registers only for the operands that are staged (an empty array otherwise)
  Chunk16 ra[kAsyncA ? 1 : Tile<S>::CHUNKS], rb[kAsyncB ? 1 : Tile<S>::CHUNKS];
  if (nk > 0) {
    if constexpr (kAsyncA) fill_async<S, MA>(la, 0, smem[0][0]);
    else la.load(0, ra);
    if constexpr (kAsyncB) fill_async<S, MB>(lb, 0, smem[0][1]);
    else lb.load(0, rb);
    if constexpr (kAsyncA || kAsyncB) asm volatile("cp.async.wait_all;\n" ::);
    if constexpr (!kAsyncA) fill_store<S, MA>(la, smem[0][0], ra);
    if constexpr (!kAsyncB) fill_store<S, MB>(lb, smem[0][1], rb);
  }
  __syncthreads();
  // one barrier per slice: stage s is read while stage s^1 fills; the barrier at the end of a
  // slice both publishes the next stage and retires every read of the current one
  for (int kt = 0; kt < nk; kt++) {
    const int cur = kt & 1;
    const bool more = kt + 1 < nk;
    if (more) {
      if constexpr (kAsyncA) fill_async<S, MA>(la, (kt + 1) * BK, smem[cur ^ 1][0]);
      else la.load((kt + 1) * BK, ra);
      if constexpr (kAsyncB) fill_async<S, MB>(lb, (kt + 1) * BK, smem[cur ^ 1][1]);
      else lb.load((kt + 1) * BK, rb);
    }
    mma_slice<mode_mn_tile(MA), mode_mn_tile(MB)>(acc, smem[cur][0], smem[cur][1], wm, wn);
    if (more) {
      if constexpr (kAsyncA || kAsyncB) asm volatile("cp.async.wait_all;\n" ::);
      if constexpr (!kAsyncA) fill_store<S, MA>(la, smem[cur ^ 1][0], ra);
      if constexpr (!kAsyncB) fill_store<S, MB>(lb, smem[cur ^ 1][1], rb);
    }
    __syncthreads();
  }

  // epilogue: accumulator (mi, ni, q) is row g (+8 for q >= 2), column 2t + (q & 1) of its 16x8 tile
  const Out& out = pr.out;
  char* c = out.c + ((out.slice_rows ? o : 0) * out.ldc + (out.slice_cols ? o : 0)) * dsize(out.dtype);
  const int lane = threadIdx.x & 31, lr = lane >> 2, lc = 2 * (lane & 3);
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const int row = m0 + wm * 64 + mi * 16 + lr + (q >> 1) * 8;
      if (row >= row_end) continue;
      if (pr.ws) {  // split-K partial: raw sums, [z][M][N] (the reduce applies alpha and beta)
        float* w = pr.ws + (int64_t(blockIdx.z) * pr.M + row) * pr.N;
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
          const int col = n0 + wn * 32 + ni * 8 + lc + (q & 1);
          if (col < pr.N) w[col] = acc[mi][ni][q];
        }
        continue;
      }
      if (glu) {
        // n8 tiles (0,1) and (2,3) hold up and gate of the same 8 columns (see Loader::init)
#pragma unroll
        for (int np = 0; np < 2; np++) {
          const int col = n0 + wn * 16 + np * 8 + lc + (q & 1);
          if (col >= pr.N) continue;
          const float u = acc[mi][2 * np][q], gt = acc[mi][2 * np + 1][q];
          if (out.h) {
            out.h[int64_t(row) * out.ldh + col] = u;
            out.h[int64_t(row) * out.ldh + pr.N + col] = gt;
          }
          store_f(c, out.dtype, int64_t(row) * out.ldc + col, u * gt / (1.f + __expf(-gt)));
        }
        continue;
      }
#pragma unroll
      for (int ni = 0; ni < 4; ni++) {
        const int col = n0 + wn * 32 + ni * 8 + lc + (q & 1);
        if (col >= pr.N) continue;
        const int64_t at = int64_t(row) * out.ldc + col;
        float v = out.alpha * acc[mi][ni][q];
        if (out.beta != 0.f) v += out.beta * load_f(c, out.dtype, at);  // beta == 0 never reads c (NaN-safe)
        store_f(c, out.dtype, at, v);
      }
    }
}

Operand operand(const GemmSpec::Operand& s, bool kcontig, int tile_elem_bytes) {
  Operand o{};
  o.p = static_cast<const char*>(s.v.data);
  o.ld = ld_of(s.v);
  o.dtype = s.v.dtype;
  o.kcontig = kcontig;
  o.gather = s.gather;
  o.glu_gate = s.glu_gate;
  o.slice_rows = s.slice_rows;
  o.slice_k = s.slice_k;
  // a chunk is 16 bytes of the tile; in the operand's own dtype 16 bytes, or 8 (bf16 -> float)
  const int64_t vb = 16 / tile_elem_bytes * dtype_size(s.v.dtype);
  o.vec_ok = (reinterpret_cast<uintptr_t>(s.v.data) % uintptr_t(vb) == 0) && ((o.ld * dtype_size(s.v.dtype)) % vb == 0);
  return o;
}

// split-K: c = alpha * (sum over z of ws[z], z in order) + beta * c, so the bits do not depend on
// which layer finished first (no atomics)
__global__ void splitk_reduce(const float* __restrict__ ws, int splits, int M, int N, char* c, int64_t ldc, int dtype,
                              float alpha, float beta) {
  const int64_t MN = int64_t(M) * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < MN; i += int64_t(gridDim.x) * blockDim.x) {
    float v = 0.f;
    for (int z = 0; z < splits; z++) v += ws[z * MN + i];
    const int64_t at = (i / N) * ldc + i % N;
    v *= alpha;
    if (beta != 0.f) v += beta * load_f(c, dtype, at);
    store_f(c, dtype, at, v);
  }
}

// VFFN_CUDA_GEMM, read once: unset, "" or "auto": the loads above and split-K; "nosplit": the
// same without split-K; "staged": the old dispatch (cp.async only when both operands are
// K-contiguous, everything else TS, no split-K). -1: anything else
enum GemmPath { PathAuto = 0, PathNoSplit = 1, PathStaged = 2 };
int gemm_path() {
  static const int path = [] {
    const char* e = std::getenv("VFFN_CUDA_GEMM");
    if (!e || !*e || !std::strcmp(e, "auto")) return int(PathAuto);
    if (!std::strcmp(e, "nosplit")) return int(PathNoSplit);
    if (!std::strcmp(e, "staged")) return int(PathStaged);
    return -1;
  }();
  return path;
}

using KernelFn = void (*)(const Problem);
template <class S>
KernelFn kernel_for(int ma, int mb) {
  static const KernelFn table[4][4] = {
      {gemm_kernel<S, KA, KA>, gemm_kernel<S, KA, KS>, gemm_kernel<S, KA, NA>, gemm_kernel<S, KA, NS>},
      {gemm_kernel<S, KS, KA>, gemm_kernel<S, KS, KS>, gemm_kernel<S, KS, NA>, gemm_kernel<S, KS, NS>},
      {gemm_kernel<S, NA, KA>, gemm_kernel<S, NA, KS>, gemm_kernel<S, NA, NA>, gemm_kernel<S, NA, NS>},
      {gemm_kernel<S, NS, KA>, gemm_kernel<S, NS, KS>, gemm_kernel<S, NS, NA>, gemm_kernel<S, NS, NS>},
  };
  if (ma == TS) return gemm_kernel<S, TS, TS>;
  return table[ma][mb];
}

}  // namespace

void gemm_ex(int dev, const GemmSpec& s) {
  const GemmSpec::Operand &A = s.a, &B = s.b;
  require_matrix(A.v, "a");
  require_matrix(B.v, "b");
  require_matrix(s.c, "c");
  // K + one slice must fit an int: the tile loop's k offsets run one slice past K
  require(s.M <= INT_MAX && s.N <= INT_MAX && s.K <= INT_MAX - 64, "gemm: sizes beyond 2^31");
  require(!A.gather || !A.trans, "gemm: a row gather needs a K-contiguous a");
  require(!B.gather && !A.glu_gate, "gemm: gather on a only, SwiGLU tiles on b only");
  require(!B.glu_gate || (B.trans && s.mode == GemmSpec::Glu), "gemm: SwiGLU tiles need a K-contiguous b");
  require(s.mode != GemmSpec::Glu || B.glu_gate > 0, "gemm: the SwiGLU epilogue needs SwiGLU tiles");
  require(s.mode == GemmSpec::Store || s.mode == GemmSpec::Glu, "gemm: unknown epilogue");
  require(!s.seg_start || s.seg_count >= 1, "gemm: groups need a count");
  const int path = gemm_path();
  require(path >= 0, "VFFN_CUDA_GEMM must be 'auto', 'nosplit' or 'staged' (or unset)");
  cudaStream_t st = stream(dev);
  if (s.M == 0 || s.N == 0) return;

  const bool bf16_tiles = (A.v.dtype == BF16 && B.v.dtype == BF16) || (s.bf16_math && (A.v.dtype == BF16 || B.v.dtype == BF16));
  const int tb = bf16_tiles ? 2 : 4;
  const int tile_dtype = bf16_tiles ? BF16 : F32;
  Problem pr{};
  // stored layouts: a is [M,K] (K-contiguous) or [K,M]; b is [N,K] (K-contiguous) or [K,N]
  pr.a = operand(A, !A.trans, tb);
  pr.b = operand(B, B.trans, tb);
  pr.out = Out{static_cast<char*>(s.c.data), ld_of(s.c), s.c.dtype, s.mode, s.alpha, s.beta, s.h, s.h_ld,
               s.c_slice_rows, s.c_slice_cols};
  pr.seg = Seg{s.seg_start, s.seg_count, s.seg_over_k, s.slice_I, s.slice_E};
  pr.M = int(s.M);
  pr.N = int(s.N);
  pr.K = int(s.K);
  pr.m_limit = s.m_limit;

  const bool row_groups = s.seg_start && !s.seg_over_k;
  const int64_t tiles_m = (s.M + BM - 1) / BM + (row_groups ? s.seg_count : 0);
  const int64_t n_per_block = s.mode == GemmSpec::Glu ? BN / 2 : BN;
  require(tiles_m <= 65535 && (!s.seg_start || !s.seg_over_k || s.seg_count <= 65535), "gemm: M beyond the grid");
  dim3 grid(unsigned((s.N + n_per_block - 1) / n_per_block), unsigned(tiles_m),
            unsigned(s.seg_start && s.seg_over_k ? s.seg_count : 1));

  // does some group's expert offset o_g break 16-byte alignment (not a multiple of 16 bytes)?
  const int64_t v = 16 / tb;
  auto offsets_misalign = [&] {
    for (int e = 0; e < s.seg_count; e++) {
      const int64_t o = s.seg_count > 1 ? e * (s.slice_I - s.slice_E) / (s.seg_count - 1) : 0;
      if (o % v) return true;
    }
    return false;
  };
  int ma, mb;
  if (path == PathStaged) {
    // the old dispatch: cp.async only when both operands are K-contiguous and of one dtype;
    // expert offsets along k must keep rows aligned, and K groups start anywhere
    bool async = pr.a.kcontig && pr.b.kcontig && pr.a.vec_ok && pr.b.vec_ok && A.v.dtype == B.v.dtype &&
                 !(s.seg_start && s.seg_over_k);
    if (async && s.seg_start && (A.slice_k || B.slice_k) && offsets_misalign()) async = false;
    ma = mb = async ? KA : TS;
  } else {
    // each operand on its own: cp.async when it is of the tile's type and every 16-byte chunk a
    // block copies starts 16-byte aligned, else staged in registers (converted) in its own layout.
    //  K-contiguous: row starts are base + row*ld (+ o_g with slice_k, + the K group's start,
    //    which can be anything: K groups stage their K-contiguous operands);
    //  MN-major: a chunk is V rows at one k, base + k*ld + row: tiles start at multiples of V
    //    rows unless row groups place them (a only), and o_g with slice_rows shifts the rows
    auto mode = [&](const Operand& o, const GemmSpec::Operand& g, bool is_a) {
      const bool own = o.dtype == tile_dtype && o.vec_ok;
      if (o.kcontig) {
        const bool ok = own && !(s.seg_start && s.seg_over_k) && !(s.seg_start && g.slice_k && offsets_misalign());
        return ok ? int(KA) : int(KS);
      }
      const bool ok = own && !(is_a && row_groups) && !(s.seg_start && g.slice_rows && offsets_misalign());
      return ok ? int(NA) : int(NS);
    };
    ma = mode(pr.a, A, true);
    mb = mode(pr.b, B, false);
  }

  // split-K for grids under half a wave with a long K (the router's and loop head's weight
  // gradients: M <= 64 rows, K = tokens): about two blocks per multiprocessor, each layer at least
  // 4 slices of k; partial sums in a float32 workspace, reduced in layer order
  int splits = 1;
  if (path == PathAuto && s.mode == GemmSpec::Store && !s.seg_start && !s.m_limit) {
    const int64_t blocks = int64_t(grid.x) * grid.y, bk = 64 / tb, nk = s.K / bk + (s.K % bk != 0);
    const int64_t sms = sm_count(dev);
    if (blocks * 2 <= sms) {
      int64_t want = std::min<int64_t>({(2 * sms + blocks - 1) / blocks, nk / 4, 64});
      const int64_t cap = (int64_t(64) << 20) / (4 * s.M * s.N);  // workspace at most 64 MiB
      want = std::min(want, cap);
      if (want >= 2) {
        const int64_t per = (nk + want - 1) / want;  // slices per layer
        pr.k_chunk = int(per * bk);
        splits = int((s.K + pr.k_chunk - 1) / pr.k_chunk);
      }
    }
  }
  Scratch ws(dev, splits > 1 ? size_t(splits) * size_t(s.M) * size_t(s.N) * 4 : 0);
  if (splits > 1) {
    pr.ws = ws.as<float>();
    grid.z = unsigned(splits);
  }
  KernelFn k = bf16_tiles ? kernel_for<uint16_t>(ma, mb) : kernel_for<float>(ma, mb);
  k<<<grid, THREADS, 0, st>>>(pr);
  check_launch("gemm");
  if (splits > 1) {
    splitk_reduce<<<blocks_for(s.M * s.N, 256), 256, 0, st>>>(pr.ws, splits, pr.M, pr.N, pr.out.c, pr.out.ldc,
                                                             pr.out.dtype, s.alpha, s.beta);
    check_launch("gemm split-K");
  }
}

void gemm(int dev, const View& c, const View& a, const View& b, bool trans_a, bool trans_b, float alpha, float beta) {
  require_matrix(c, "c");
  require_matrix(a, "a");
  require_matrix(b, "b");
  GemmSpec s;
  s.M = c.shape[0];
  s.N = c.shape[1];
  s.K = trans_a ? a.shape[0] : a.shape[1];
  require((trans_a ? a.shape[1] : a.shape[0]) == s.M, "gemm: a has the wrong number of rows for c");
  require((trans_b ? b.shape[1] : b.shape[0]) == s.K, "gemm: inner dimensions of a and b differ");
  require((trans_b ? b.shape[0] : b.shape[1]) == s.N, "gemm: b has the wrong number of columns for c");
  s.a.v = a;
  s.a.trans = trans_a;
  s.b.v = b;
  s.b.trans = trans_b;
  s.c = c;
  s.alpha = alpha;
  s.beta = beta;
  gemm_ex(dev, s);
}

}  // namespace vffn::cuda

VFFN_CUDA_EXPORT int vffn_cuda_gemm_rows(int dev, const void* args) {
  return vffn::cuda::entry([&] {
    using namespace vffn;
    using namespace vffn::cuda;
    const GemmRowsArgs& g = *static_cast<const GemmRowsArgs*>(args);
    require_matrix(g.c, "c");
    require_matrix(g.a, "a");
    require_matrix(g.b, "b");
    require(g.rows.dtype == I32 && g.rows.ndim == 1 && (g.rows.shape[0] <= 1 || g.rows.stride[0] == 1),
            "gemm_rows: rows must be a contiguous int32 [M]");
    GemmSpec s;
    s.M = g.rows.shape[0];
    s.N = g.c.shape[1];
    s.K = g.a.shape[1];
    require(g.c.shape[0] == s.M, "gemm_rows: c must have one row per index");
    require((g.trans_b ? g.b.shape[1] : g.b.shape[0]) == s.K && (g.trans_b ? g.b.shape[0] : g.b.shape[1]) == s.N,
            "gemm_rows: b does not match a and c");
    // a test hook: the indices come back to the host and are checked before any kernel reads a
    if (s.M > 0) {
      std::vector<int32_t> idx(size_t(s.M));
      cudaStream_t st = stream(dev);
      check(cudaMemcpyAsync(idx.data(), g.rows.data, idx.size() * 4, cudaMemcpyDeviceToHost, st), "gemm_rows");
      check(cudaStreamSynchronize(st), "gemm_rows");
      for (int64_t i = 0; i < s.M; i++)
        require(idx[size_t(i)] >= 0 && idx[size_t(i)] < g.a.shape[0],
                "gemm_rows: rows[" + std::to_string(i) + "] = " + std::to_string(idx[size_t(i)]) + " is outside a's " +
                    std::to_string(g.a.shape[0]) + " rows");
    }
    s.a.v = g.a;
    s.a.gather = static_cast<const int*>(g.rows.data);
    s.b.v = g.b;
    s.b.trans = g.trans_b;
    s.c = g.c;
    s.alpha = g.alpha;
    s.beta = g.beta;
    s.bf16_math = g.bf16_math;
    gemm_ex(dev, s);
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_gemm(int dev, const void* args) {
  return vffn::cuda::entry([&] {
    const vffn::GemmArgs& g = *static_cast<const vffn::GemmArgs*>(args);
    vffn::cuda::gemm(dev, g.c, g.a, g.b, g.trans_a, g.trans_b, g.alpha, g.beta);
  });
}
