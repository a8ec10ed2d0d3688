// packed GEMM in the GotoBLAS/BLIS style: op(B) is packed in KC x NC panels, op(A) in MC x KC
// blocks (bf16 widened, row gather and transposes applied while packing), and a register-blocked
// micro-kernel runs over the packed buffers. threads split M and N only, never K, so each C
// element is summed in the same order (KC blocks, each k-ordered) at every thread count.
#include "gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../core/dtype.h"
#include "../core/error.h"
#include "gemm_kernels.h"
#include "pool.h"

namespace vffn::cpu {

// ---- generic packing (any dtype, transpose, gather; used by the portable kernel and edges) ----

template <typename T>
static inline float elem(const T* p, int64_t i) {
  if constexpr (sizeof(T) == 2)
    return bf16_to_f32(p[i]);
  else
    return p[i];
}

template <typename T>
static void pack_a_t(const Mat& A, int64_t i0, int64_t m, int64_t p0, int64_t k, int mr, float* dst) {
  const T* d = static_cast<const T*>(A.data);
  for (int64_t ir = 0; ir < m; ir += mr, dst += k * mr) {
    int64_t rows = std::min<int64_t>(mr, m - ir);
    for (int64_t i = 0; i < mr; i++) {
      float* o = dst + i;
      if (i >= rows) {
        for (int64_t p = 0; p < k; p++) o[p * mr] = 0.f;
      } else if (A.trans) {  // element (i, p) is stored at [p, i]
        const T* s = d + p0 * A.ld + (i0 + ir + i);
        for (int64_t p = 0; p < k; p++) o[p * mr] = elem(s, p * A.ld);
      } else {
        int64_t r = i0 + ir + i;
        const T* s = d + (A.rows ? int64_t(A.rows[r]) : r) * A.ld + p0;
        for (int64_t p = 0; p < k; p++) o[p * mr] = elem(s, p);
      }
    }
  }
}

template <typename T>
static void pack_b_t(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, int nr, float* dst) {
  const T* d = static_cast<const T*>(B.data);
  for (int64_t jr = 0; jr < n; jr += nr, dst += k * nr) {
    int64_t cols = std::min<int64_t>(nr, n - jr);
    for (int64_t p = 0; p < k; p++) {
      float* o = dst + p * nr;
      if (B.trans) {  // element (p, j) is stored at [j, p]
        const T* s = d + (j0 + jr) * B.ld + p0 + p;
        for (int64_t j = 0; j < cols; j++) o[j] = elem(s, j * B.ld);
      } else {
        int64_t r = p0 + p;
        const T* s = d + (B.rows ? int64_t(B.rows[r]) : r) * B.ld + j0 + jr;
        for (int64_t j = 0; j < cols; j++) o[j] = elem(s, j);
      }
      for (int64_t j = cols; j < nr; j++) o[j] = 0.f;
    }
  }
}

void gemm_pack_a_generic(const Mat& A, int64_t i0, int64_t m, int64_t p0, int64_t k, int mr, float* dst) {
  if (A.dtype == BF16) return pack_a_t<uint16_t>(A, i0, m, p0, k, mr, dst);
  pack_a_t<float>(A, i0, m, p0, k, mr, dst);
}

void gemm_pack_b_generic(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, int nr, float* dst) {
  if (B.dtype == BF16) return pack_b_t<uint16_t>(B, p0, k, j0, n, nr, dst);
  pack_b_t<float>(B, p0, k, j0, n, nr, dst);
}

// ---- the portable kernel: plain C++ the compiler vectorises for the baseline instruction set ----

namespace {

constexpr int kPMR = 4, kPNR = 16;

void portable_micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta) {
  float acc[kPMR][kPNR] = {};
  for (int64_t p = 0; p < kc; p++, a += kPMR, b += kPNR)
    for (int i = 0; i < kPMR; i++)
      for (int j = 0; j < kPNR; j++) acc[i][j] += a[i] * b[j];
  for (int i = 0; i < kPMR; i++)
    for (int j = 0; j < kPNR; j++) {
      float r = alpha * acc[i][j];
      c[i * ldc + j] = beta == 0.f ? r : beta * c[i * ldc + j] + r;
    }
}

void portable_pack_a(const Mat& A, int64_t i0, int64_t m, int64_t p0, int64_t k, float* dst) {
  gemm_pack_a_generic(A, i0, m, p0, k, kPMR, dst);
}
void portable_pack_b(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, float* dst) {
  gemm_pack_b_generic(B, p0, k, j0, n, kPNR, dst);
}

const GemmKernel kPortable{"portable", kPMR, kPNR, 128, 256, 4096, portable_micro, portable_pack_a, portable_pack_b};

// VFFN_GEMM_KERNEL, read once: "portable" (both paths), "avx2" (the small-M path off AVX-512)
const std::string& kernel_request() {
  static const std::string want = [] {
    const char* env = std::getenv("VFFN_GEMM_KERNEL");
    return std::string(env ? env : "");
  }();
  return want;
}

const GemmKernel& select_kernel() {
  if (kernel_request() == "portable") return kPortable;
  // an 8x32 AVX-512 kernel measured no faster than this one on Zen 4 (512-bit FMAs issue at half
  // rate there), so AVX2 + FMA is the fast path
  const GemmKernel* k256 = gemm_kernel_avx2();
  return k256 ? *k256 : kPortable;
}

const GemmKernel& kernel() {
  static const GemmKernel& k = select_kernel();
  return k;
}

// per-thread packing buffers, 64-byte aligned, grown on demand and kept for the thread's life
float* scratch(int which, int64_t floats) {
  struct Buf {
    float* p = nullptr;
    int64_t n = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf bufs[3];  // A block, B panel, all of A (shared with the pool's threads)
  Buf& b = bufs[which];
  if (b.n < floats) {
    std::free(b.p);
    b.p = nullptr;
    b.n = 0;
    // 64 floats of slack past the end, in case a packer's vector store overshoots
    size_t bytes = (size_t(floats + 64) * sizeof(float) + 63) / 64 * 64;
    b.p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!b.p) fail("ERR_OOM", "gemm: cannot allocate " + std::to_string(bytes) + " bytes of packing buffer");
    b.n = floats;
  }
  return b.p;
}

// all of op(A) packed once, shared by tasks that cover the same rows: K block pc (kc wide, kb
// packed) of the micro-panel starting at row i (a multiple of mr) is at pc * mpad + i * kb.
struct PackedA {
  const float* data = nullptr;
  int64_t mpad = 0;  // M rounded up to mr
};

void pack_a_all(const GemmKernel& kr, int64_t M, int64_t K, const Mat& A, float* dst, int64_t mpad) {
  const int64_t kc = std::min<int64_t>(kr.kc, K), nk = (K + kc - 1) / kc, nm = (M + kr.mc - 1) / kr.mc;
  parallel_for(nk * nm, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      const int64_t pc = t / nm * kc, ic = t % nm * kr.mc;
      const int64_t kb = std::min(kc, K - pc);
      kr.pack_a(A, ic, std::min<int64_t>(kr.mc, M - ic), pc, kb, dst + pc * mpad + ic * kb);
    }
  });
}

// C[m0:m1, n0:n1] on the calling thread. m0 and n0 are multiples of mr and nr (or the matrix
// start), so every C element falls in the same micro-tile whatever the split.
void gemm_block(const GemmKernel& kr, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, float alpha,
                const Mat& A, const Mat& B, float beta, float* C, int64_t ldc, PackedA packed = {}, PackedB pre = {}) {
  const int mr = kr.mr, nr = kr.nr;
  const int64_t mc = std::min<int64_t>(kr.mc, (m1 - m0 + mr - 1) / mr * mr);
  const int64_t nc = std::min<int64_t>(kr.nc, (n1 - n0 + nr - 1) / nr * nr);
  const int64_t kc = std::min<int64_t>(kr.kc, K);
  float* pa = packed.data ? nullptr : scratch(0, mc * kc);
  float* pb = pre.data ? nullptr : scratch(1, kc * nc);
  alignas(64) float tile[32 * 32];
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t nb = std::min(nc, n1 - jc);
    for (int64_t pc = 0; pc < K; pc += kc) {
      const int64_t kb = std::min(kc, K - pc);
      const float bb = pc == 0 ? beta : 1.f;  // later K blocks accumulate onto the first
      // B^T micro-panels are packed just before their first use (a transpose of nr stored rows
      // that then stays in L1); plain B is packed whole, streaming each stored row once
      // (or read from a copy packed whole before, pre)
      const bool lazy = B.trans && !pre.data;
      if (!B.trans) kr.pack_b(B, pc, kb, jc, nb, pb);
      for (int64_t ic = m0; ic < m1; ic += mc) {
        const int64_t mb = std::min(mc, m1 - ic);
        const float* ap0 = packed.data ? packed.data + pc * packed.mpad + ic * kb : pa;
        if (!packed.data) kr.pack_a(A, ic, mb, pc, kb, pa);
        for (int64_t jr = 0; jr < nb; jr += nr) {
          const float* bp = pre.data ? pre.data + pc * pre.npad + (jc + jr) * kb : pb + jr * kb;
          const int64_t nv = std::min<int64_t>(nr, nb - jr);
          if (lazy && ic == m0) kr.pack_b(B, pc, kb, jc + jr, nv, pb + jr * kb);
          for (int64_t ir = 0; ir < mb; ir += mr) {
            const float* ap = ap0 + ir * kb;
            const int64_t mv = std::min<int64_t>(mr, mb - ir);
            float* c = C + (ic + ir) * ldc + jc + jr;
            if (mv == mr && nv == nr) {
              kr.micro(kb, ap, bp, c, ldc, alpha, bb);
              continue;
            }
            if (nv == nr && kr.micro_rows) {  // a bottom edge: only its rows, straight into C
              kr.micro_rows(int(mv), kb, ap, bp, c, ldc, alpha, bb);
              continue;
            }
            // edge tile: the same kernel (same arithmetic) on a full tile in scratch
            if (bb != 0.f)
              for (int64_t i = 0; i < mv; i++) std::memcpy(tile + i * nr, c + i * ldc, size_t(nv) * sizeof(float));
            kr.micro(kb, ap, bp, tile, nr, alpha, bb);
            for (int64_t i = 0; i < mv; i++) std::memcpy(c + i * ldc, tile + i * nr, size_t(nv) * sizeof(float));
          }
        }
      }
    }
  }
}

// C = beta * C without a product (K == 0 or alpha == 0), as BLAS does
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * ldc;
    if (beta == 0.f)
      std::fill(c, c + N, 0.f);
    else
      for (int64_t j = 0; j < N; j++) c[j] *= beta;
  }
}

// the small-M kernel: the portable one with the portable packed kernel; AVX-512 where the machine
// has it, unless VFFN_GEMM_KERNEL=avx2 asks for the AVX2 one (the same bits either way)
struct SmallKernel {
  const char* name;
  GemmSmallFn fn;
};
const SmallKernel& small_kernel() {
  static const SmallKernel k = []() -> SmallKernel {
    if (std::string(kernel().name) == "portable") return {"portable", gemm_small_portable};
    if (const GemmSmallFn f = kernel_request() == "avx2" ? nullptr : gemm_small_avx512()) return {"avx512", f};
    if (const GemmSmallFn f = gemm_small_avx2()) return {"avx2", f};
    return {"portable", gemm_small_portable};
  }();
  return k;
}

// the small-M path (decoding): op(B) is read in place, not packed. rows of op(A) as float
// pointers; A is widened, transposed or gathered into a buffer only when it is not already
// K-contiguous float32 (M * K floats, small). threads split N in 64-column units, never K.
void gemm_small(int64_t M, int64_t N, int64_t K, float alpha, const Mat& A, const Mat& B, float beta, float* C,
                int64_t ldc, bool parallel) {
  const GemmSmallFn fn = small_kernel().fn;
  const float* a[kGemmSmallM];
  if (A.dtype == F32 && !A.trans) {
    for (int64_t i = 0; i < M; i++)
      a[i] = static_cast<const float*>(A.data) + (A.rows ? int64_t(A.rows[i]) : i) * A.ld;
  } else {
    float* buf = scratch(2, M * K);
    for (int64_t i = 0; i < M; i++) {
      float* o = buf + i * K;
      const int64_t r = A.rows ? int64_t(A.rows[i]) : i;
      if (A.dtype == BF16) {
        const uint16_t* d = static_cast<const uint16_t*>(A.data);
        for (int64_t p = 0; p < K; p++) o[p] = bf16_to_f32(A.trans ? d[p * A.ld + i] : d[r * A.ld + p]);
      } else {
        const float* d = static_cast<const float*>(A.data);
        for (int64_t p = 0; p < K; p++) o[p] = d[p * A.ld + i];  // trans (plain f32 took the pointers)
      }
      a[i] = o;
    }
  }
  const int P = parallel ? threads() : 1;
  // this path is bound by reading op(B): split it once it is past about 64 KiB (a hand-off to
  // polling threads costs a few µs; one thread reads 64 KiB from the last-level cache in ~3 µs)
  if (P <= 1 || double(N) * double(K) < 16384) return fn(M, 0, N, K, alpha, a, B, beta, C, ldc);
  // whole register blocks per thread (8 rows of B^T at one row of A, 3 at more, 64-column strips
  // of B): no chunk ends in a slow tail, and the threads' shares differ by at most one unit
  const int64_t kUnit = !B.trans ? 64 : M == 1 ? 8 : 24;
  parallel_for((N + kUnit - 1) / kUnit, 1, [&](int64_t b, int64_t e, int) {
    fn(M, b * kUnit, std::min(N, e * kUnit), K, alpha, a, B, beta, C, ldc);
  });
}

thread_local PackedBSource packed_b_source = nullptr;

}  // namespace

void set_packed_b_source(PackedBSource f) { packed_b_source = f; }

int64_t packed_b_floats(int64_t N, int64_t K) {
  const GemmKernel& kr = kernel();
  return (N + kr.nr - 1) / kr.nr * kr.nr * K;
}

// every K block of all of op(B)'s panels, in parallel over the blocks and groups of panels
void pack_b_all(int64_t N, int64_t K, const Mat& B, float* dst) {
  const GemmKernel& kr = kernel();
  const int64_t kc = std::min<int64_t>(kr.kc, K), nk = (K + kc - 1) / kc, npad = (N + kr.nr - 1) / kr.nr * kr.nr;
  const int64_t unit = 16 * int64_t(kr.nr), nj = (N + unit - 1) / unit;
  parallel_for(nk * nj, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      const int64_t pc = t / nj * kc, j0 = t % nj * unit, kb = std::min(kc, K - pc);
      kr.pack_b(B, pc, kb, j0, std::min(unit, N - j0), dst + pc * npad + j0 * kb);
    }
  });
}

void gemm(int64_t M, int64_t N, int64_t K, float alpha, const Mat& A, const Mat& B, float beta, float* C,
          int64_t ldc, bool parallel) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.f) return scale_c(M, N, beta, C, ldc);
  // B^T with a row gather is outside the contract (rows only on a plain operand); leave it packed
  if (M <= kGemmSmallM && !(B.trans && B.rows)) return gemm_small(M, N, K, alpha, A, B, beta, C, ldc, parallel);
  const GemmKernel& kr = kernel();
  const PackedB pre = parallel && B.trans && packed_b_source ? packed_b_source(B, N, K) : PackedB{};
  const int P = parallel ? threads() : 1;
  // below ~1 MFLOP waking the pool costs more than it saves
  if (P <= 1 || double(M) * double(N) * double(K) < 5e5) return gemm_block(kr, 0, M, 0, N, K, alpha, A, B, beta, C, ldc, {}, pre);
  // split C into a grid of gm x gn tile-aligned tasks, taken dynamically by the threads. the
  // estimate per grid: rounds of tasks (+ a quarter task for a thread that starts late or is
  // preempted) times one task's work: its multiply-adds plus its packing (a packed element of B
  // costs about 16 multiply-adds, of A about 10, measured; a plain [K, N] B also pays about 4096
  // per stored row segment a task packs, so narrow column tasks cost more there). A is packed once
  // up front and shared when several column tasks would each pack it and it is not too large.
  constexpr double kPackA = 10, kPackB = 16;
  const double row_start = B.trans ? 0 : 4096;
  constexpr int64_t kSharedA = int64_t(1) << 23;  // floats (32 MiB)
  const int64_t tm = (M + kr.mr - 1) / kr.mr, tn = (N + kr.nr - 1) / kr.nr;  // tiles
  const bool can_share = tm * kr.mr * K <= kSharedA;
  int64_t gm = 1, gn = 1;
  double best = -1;
  for (int64_t m = 1; m <= std::min<int64_t>(tm, 8 * P); m++)
    for (int64_t n = 1; n <= std::min<int64_t>(tn, 8 * P) && m * n <= 8 * P; n++) {
      const double mt = double((tm + m - 1) / m * kr.mr), nt = double((tn + n - 1) / n * kr.nr);
      const bool shared = can_share && n > 1;
      const double pack_a = shared ? kPackA * mt / double(n) : kPackA * mt * std::ceil(nt / double(kr.nc));
      // (counted even when op(B) comes packed: the grids chosen without it measured the same
      // within 5% at M = 32 and 64 on 2 threads, and this keeps one estimate for both)
      const double pack_b = kPackB * nt + row_start * std::ceil(nt / double(kr.nc));
      const double work = mt * nt * double(K) + double(K) * (pack_b + pack_a);
      const double est = (double((m * n + P - 1) / P) + 0.25) * work;
      if (best < 0 || est < best) best = est, gm = m, gn = n;
    }
  PackedA packed;
  if (can_share && gn > 1) {
    packed.mpad = tm * kr.mr;
    float* buf = scratch(2, packed.mpad * K);
    pack_a_all(kr, M, K, A, buf, packed.mpad);
    packed.data = buf;
  }
  parallel_tasks(gm * gn, [&](int64_t t, int) {
    const int64_t bi = t / gn, bj = t % gn;
    const int64_t m0 = std::min(M, tm * bi / gm * kr.mr), m1 = std::min(M, tm * (bi + 1) / gm * kr.mr);
    const int64_t n0 = std::min(N, tn * bj / gn * kr.nr), n1 = std::min(N, tn * (bj + 1) / gn * kr.nr);
    if (m0 < m1 && n0 < n1) gemm_block(kr, m0, m1, n0, n1, K, alpha, A, B, beta, C, ldc, packed, pre);
  });
}

const char* gemm_kernel_name() { return kernel().name; }
const char* gemm_small_kernel_name() { return small_kernel().name; }

}  // namespace vffn::cpu
