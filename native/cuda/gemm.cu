// GEMM on tensor cores: c[M,N] = alpha * op(a)[M,K] * op(b)[K,N] + beta * c, float32 accumulate.
// block tile 128x128, 8 warps of 64x32, K in 64-byte slices, two shared-memory stages.
// both operands land in shared memory K-contiguous ("[row][k]") whatever their transposes, so
// one fragment path serves every layout:
//   bf16 operands    -> ldmatrix + mma.sync m16n8k16 bf16 (bf16 in, fp32 accumulate)
//   any float32 side -> lds + mma.sync m16n8k8 tf32, bf16 operands widened exactly. tf32 rather
//                       than rounding to bf16 on load: 10 mantissa bits instead of 7 keep float32
//                       models close to the CPU oracle (~3e-4 relative, not ~3e-3), at half the
//                       tensor-core rate, which float32 users already trade for precision.
// loads: when both operands are K-contiguous, of the tile's own type and 16-byte aligned (the
// forward x·Wᵀ of every layer), cp.async copies global -> shared directly, zero-filling ragged
// edges; otherwise each thread stages 16-byte chunks in registers (converting, transposing)
// while the tensor cores work on the other stage. ragged M, N, K are bounds-checked per chunk.
#include <climits>

#include "../core/ops.h"
#include "common.cuh"

namespace vffn::cuda {

namespace {

constexpr int BM = 128, BN = 128, THREADS = 256;

template <class S>
struct Tile {
  static constexpr int BK = 64 / int(sizeof(S));   // 32 bf16 or 16 float: 64 bytes of K per row
  static constexpr int V = 16 / int(sizeof(S));    // elements per 16-byte chunk
  static constexpr int LDS = BK + V;               // +16 bytes per row: conflict-free fragment loads
  static constexpr int CHUNKS = BM * BK / V / THREADS;  // chunks per thread per operand (2)
};

struct Operand {
  const void* p;
  int64_t ld;
  int dtype;
  int kcontig;  // 1: element (row, k) at row*ld + k; 0: at k*ld + row
  int rows;     // M for a, N for b
  int vec_ok;   // the contiguous dimension can be read in aligned 16-byte (or 8-byte, bf16->float) vectors
};

union Chunk16 {
  uint4 u;
  uint16_t h[8];
  float f[4];
};

template <class S> __device__ __forceinline__ S from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ uint16_t from_float<uint16_t>(float v) { return f32_to_bf16_bits(v); }

template <class S>
__device__ __forceinline__ void chunk_set(Chunk16& c, int i, S v);
template <> __device__ __forceinline__ void chunk_set<float>(Chunk16& c, int i, float v) { c.f[i] = v; }
template <> __device__ __forceinline__ void chunk_set<uint16_t>(Chunk16& c, int i, uint16_t v) { c.h[i] = v; }
template <class S>
__device__ __forceinline__ S chunk_get(const Chunk16& c, int i);
template <> __device__ __forceinline__ float chunk_get<float>(const Chunk16& c, int i) { return c.f[i]; }
template <> __device__ __forceinline__ uint16_t chunk_get<uint16_t>(const Chunk16& c, int i) { return c.h[i]; }

// where chunk `c` of a tile starts: tile row rr and k offset kk, and the (major, minor) position
// of its first element in the stored matrix, the minor dimension being the contiguous one.
template <class S>
__device__ __forceinline__ void chunk_pos(const Operand& op, int c, int row0, int k0, int& rr, int& kk, int& major,
                                          int& minor) {
  constexpr int BK = Tile<S>::BK, V = Tile<S>::V;
  if (op.kcontig) {
    rr = c / (BK / V);
    kk = (c % (BK / V)) * V;
    major = row0 + rr;
    minor = k0 + kk;
  } else {
    kk = c / (BM / V);
    rr = (c % (BM / V)) * V;
    major = k0 + kk;
    minor = row0 + rr;
  }
}

// global -> registers, converted to S, zero outside the matrix
template <class S>
__device__ __forceinline__ void load_chunks(const Operand& op, int K, int row0, int k0, Chunk16 (&r)[Tile<S>::CHUNKS]) {
  constexpr int V = Tile<S>::V;
  const int major_ext = op.kcontig ? op.rows : K, minor_ext = op.kcontig ? K : op.rows;
#pragma unroll
  for (int i = 0; i < Tile<S>::CHUNKS; i++) {
    int rr, kk, major, minor;
    chunk_pos<S>(op, threadIdx.x + i * THREADS, row0, k0, rr, kk, major, minor);
    const int64_t at = int64_t(major) * op.ld + minor;
    const bool same = (op.dtype == BF16) == (sizeof(S) == 2);
    const bool widen = op.dtype == BF16 && sizeof(S) == 4;
    if (op.vec_ok && (same || widen) && major < major_ext && minor + V <= minor_ext) {
      if (same) {
        r[i].u = __ldg(reinterpret_cast<const uint4*>(static_cast<const char*>(op.p) + at * int64_t(sizeof(S))));
      } else {  // bf16 operand in a float tile: 4 elements, 8 bytes, widened exactly
        uint2 w = __ldg(reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(op.p) + at));
        uint32_t q[2] = {w.x, w.y};
#pragma unroll
        for (int v = 0; v < V; v++) chunk_set<S>(r[i], v, from_float<S>(bf16_bits_to_f32(uint16_t(q[v / 2] >> (16 * (v % 2))))));
      }
    } else {
#pragma unroll
      for (int v = 0; v < V; v++) {
        float x = (major < major_ext && minor + v < minor_ext) ? load_f(op.p, op.dtype, at + v) : 0.f;
        chunk_set<S>(r[i], v, from_float<S>(x));
      }
    }
  }
}

// registers -> shared tile [row][k]
template <class S>
__device__ __forceinline__ void store_chunks(const Operand& op, S* sm, const Chunk16 (&r)[Tile<S>::CHUNKS]) {
  constexpr int V = Tile<S>::V, LDS = Tile<S>::LDS;
#pragma unroll
  for (int i = 0; i < Tile<S>::CHUNKS; i++) {
    int rr, kk, major, minor;
    chunk_pos<S>(op, threadIdx.x + i * THREADS, 0, 0, rr, kk, major, minor);
    if (op.kcontig) {
      *reinterpret_cast<uint4*>(sm + rr * LDS + kk) = r[i].u;
    } else {
#pragma unroll
      for (int v = 0; v < V; v++) sm[(rr + v) * LDS + kk] = chunk_get<S>(r[i], v);
    }
  }
}

// global -> shared without registers (K-contiguous operand of the tile's type, aligned).
// a ragged edge copies only the bytes inside the matrix; cp.async zero-fills the rest.
template <class S>
__device__ __forceinline__ void async_chunks(const Operand& op, int K, int row0, int k0, S* sm) {
  constexpr int V = Tile<S>::V, LDS = Tile<S>::LDS;
#pragma unroll
  for (int i = 0; i < Tile<S>::CHUNKS; i++) {
    int rr, kk, major, minor;
    chunk_pos<S>(op, threadIdx.x + i * THREADS, row0, k0, rr, kk, major, minor);
    int valid = major < op.rows ? min(max(K - minor, 0), V) : 0;
    const char* src = static_cast<const char*>(op.p) + (valid ? (int64_t(major) * op.ld + minor) * int64_t(sizeof(S)) : 0);
    uint32_t dst = uint32_t(__cvta_generic_to_shared(sm + rr * LDS + kk));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid * int(sizeof(S))));
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  uint32_t a = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ uint32_t to_tf32(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return r;
}

// one BK slice of the warp's 64x32 tile: 4 m16 tiles x 4 n8 tiles
__device__ __forceinline__ void mma_slice(float (&acc)[4][4][4], const uint16_t* As, const uint16_t* Bs, int wm, int wn) {
  constexpr int LDS = Tile<uint16_t>::LDS;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int ks = 0; ks < Tile<uint16_t>::BK; ks += 16) {
    uint32_t af[4][4], bf[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
      ldmatrix_x4(af[mi], As + (wm * 64 + mi * 16 + (lane & 15)) * LDS + ks + (lane >> 4) * 8);
#pragma unroll
    for (int nj = 0; nj < 2; nj++) {
      uint32_t r[4];
      ldmatrix_x4(r, Bs + (wn * 32 + nj * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks + ((lane >> 3) & 1) * 8);
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

__device__ __forceinline__ void mma_slice(float (&acc)[4][4][4], const float* As, const float* Bs, int wm, int wn) {
  constexpr int LDS = Tile<float>::LDS;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int ks = 0; ks < Tile<float>::BK; ks += 8) {
    uint32_t af[4][4], bf[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; mi++) {
      const float* a = As + (wm * 64 + mi * 16 + g) * LDS + ks + t;
      af[mi][0] = to_tf32(a[0]);
      af[mi][1] = to_tf32(a[8 * LDS]);
      af[mi][2] = to_tf32(a[4]);
      af[mi][3] = to_tf32(a[8 * LDS + 4]);
    }
#pragma unroll
    for (int ni = 0; ni < 4; ni++) {
      const float* b = Bs + (wn * 32 + ni * 8 + g) * LDS + ks + t;
      bf[ni][0] = to_tf32(b[0]);
      bf[ni][1] = to_tf32(b[4]);
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

// S: the shared tile type (uint16_t = bf16 bits, or float for tf32). kAsync: both operands go
// through cp.async (host checked: K-contiguous, of type S, aligned).
template <class S, bool kAsync>
__global__ void __launch_bounds__(THREADS, 2)
    gemm_kernel(void* c, int c_dtype, int64_t ldc, Operand a, Operand b, int M, int N, int K, float alpha, float beta) {
  constexpr int BK = Tile<S>::BK, LDS = Tile<S>::LDS, STAGE = BM * LDS;
  __shared__ alignas(16) S smem[2][2][STAGE];  // [stage][a|b]: 40 KB for either type

  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int warp = threadIdx.x >> 5, wm = warp & 1, wn = warp >> 1;
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;

  const int nk = (K + BK - 1) / BK;
  Chunk16 ra[Tile<S>::CHUNKS], rb[Tile<S>::CHUNKS];
  if (nk > 0) {
    if constexpr (kAsync) {
      async_chunks<S>(a, K, m0, 0, smem[0][0]);
      async_chunks<S>(b, K, n0, 0, smem[0][1]);
      asm volatile("cp.async.wait_all;\n" ::);
    } else {
      load_chunks<S>(a, K, m0, 0, ra);
      load_chunks<S>(b, K, n0, 0, rb);
      store_chunks<S>(a, smem[0][0], ra);
      store_chunks<S>(b, smem[0][1], rb);
    }
  }
  __syncthreads();
  // one barrier per slice: stage s is read while stage s^1 fills; the barrier at the end of a
  // slice both publishes the next stage and retires every read of the current one
  for (int kt = 0; kt < nk; kt++) {
    const int cur = kt & 1;
    const bool more = kt + 1 < nk;
    if (more) {
      if constexpr (kAsync) {
        async_chunks<S>(a, K, m0, (kt + 1) * BK, smem[cur ^ 1][0]);
        async_chunks<S>(b, K, n0, (kt + 1) * BK, smem[cur ^ 1][1]);
      } else {
        load_chunks<S>(a, K, m0, (kt + 1) * BK, ra);
        load_chunks<S>(b, K, n0, (kt + 1) * BK, rb);
      }
    }
    mma_slice(acc, smem[cur][0], smem[cur][1], wm, wn);
    if (more) {
      if constexpr (kAsync) {
        asm volatile("cp.async.wait_all;\n" ::);
      } else {
        store_chunks<S>(a, smem[cur ^ 1][0], ra);
        store_chunks<S>(b, smem[cur ^ 1][1], rb);
      }
    }
    __syncthreads();
  }

  // epilogue: accumulator (mi, ni, q) is row g (+8 for q >= 2), columns 2t, 2t+1 of its 16x8 tile
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int ni = 0; ni < 4; ni++)
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const int row = m0 + wm * 64 + mi * 16 + g + (q >> 1) * 8, col = n0 + wn * 32 + ni * 8 + 2 * t + (q & 1);
        if (row < M && col < N) {
          const int64_t at = int64_t(row) * ldc + col;
          float v = alpha * acc[mi][ni][q];
          if (beta != 0.f) v += beta * load_f(c, c_dtype, at);  // beta == 0 never reads c (NaN-safe)
          store_f(c, c_dtype, at, v);
        }
      }
}

Operand operand(const View& v, bool kcontig, int rows, int tile_elem_bytes) {
  Operand o;
  o.p = v.data;
  o.ld = ld_of(v);
  o.dtype = v.dtype;
  o.kcontig = kcontig;
  o.rows = rows;
  // a chunk is 16 bytes of the tile; in the operand's own dtype that is 16 or 8 (bf16 -> float)
  const int64_t vb = 16 / tile_elem_bytes * dtype_size(v.dtype);
  o.vec_ok = (reinterpret_cast<uintptr_t>(v.data) % uintptr_t(vb) == 0) && ((o.ld * dtype_size(v.dtype)) % vb == 0);
  return o;
}

template <class S, bool kAsync>
void launch(cudaStream_t st, const View& c, const Operand& a, const Operand& b, int M, int N, int K, float alpha,
            float beta) {
  dim3 grid(unsigned((N + BN - 1) / BN), unsigned((M + BM - 1) / BM));
  gemm_kernel<S, kAsync><<<grid, THREADS, 0, st>>>(c.data, c.dtype, ld_of(c), a, b, M, N, K, alpha, beta);
}

}  // namespace

void gemm(int dev, const View& c, const View& a, const View& b, bool trans_a, bool trans_b, float alpha, float beta) {
  require_matrix(c, "c");
  require_matrix(a, "a");
  require_matrix(b, "b");
  const int64_t M = c.shape[0], N = c.shape[1];
  const int64_t K = trans_a ? a.shape[0] : a.shape[1];
  require((trans_a ? a.shape[1] : a.shape[0]) == M, "gemm: a has the wrong number of rows for c");
  require((trans_b ? b.shape[1] : b.shape[0]) == K, "gemm: inner dimensions of a and b differ");
  require((trans_b ? b.shape[0] : b.shape[1]) == N, "gemm: b has the wrong number of columns for c");
  require(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && (M + BM - 1) / BM <= 65535,
          "gemm: sizes beyond this kernel's grid (M <= 8388480, N and K < 2^31)");
  cudaStream_t st = stream(dev);
  if (M == 0 || N == 0) return;
  const bool bf16_tiles = a.dtype == BF16 && b.dtype == BF16;
  const int tb = bf16_tiles ? 2 : 4;
  // stored layouts: a is [M,K] (K-contiguous) or [K,M]; b is [N,K] (K-contiguous) or [K,N]
  Operand oa = operand(a, !trans_a, int(M), tb), ob = operand(b, trans_b, int(N), tb);
  const bool async = oa.kcontig && ob.kcontig && oa.vec_ok && ob.vec_ok && a.dtype == b.dtype;
  if (bf16_tiles) {
    if (async)
      launch<uint16_t, true>(st, c, oa, ob, int(M), int(N), int(K), alpha, beta);
    else
      launch<uint16_t, false>(st, c, oa, ob, int(M), int(N), int(K), alpha, beta);
  } else {
    if (async)
      launch<float, true>(st, c, oa, ob, int(M), int(N), int(K), alpha, beta);
    else
      launch<float, false>(st, c, oa, ob, int(M), int(N), int(K), alpha, beta);
  }
  check_launch("gemm");
}

}  // namespace vffn::cuda

VFFN_CUDA_EXPORT int vffn_cuda_gemm(int dev, const void* args) {
  return vffn::cuda::entry([&] {
    const vffn::GemmArgs& g = *static_cast<const vffn::GemmArgs*>(args);
    vffn::cuda::gemm(dev, g.c, g.a, g.b, g.trans_a, g.trans_b, g.alpha, g.beta);
  });
}
