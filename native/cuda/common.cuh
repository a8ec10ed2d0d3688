// what every .cu file of the CUDA backend shares: status codes and the thread's last error,
// the device's stream, scratch memory from the caching allocator, launch checks, dtype helpers.
// the library is built with hidden visibility; only VFFN_CUDA_EXPORT symbols leave it.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../core/cuda_api.h"
#include "../core/dtype.h"
#include "../core/view.h"

#define VFFN_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

namespace vffn::cuda {

// thrown inside the library only, after the message went to last_error; entry points catch it.
struct Status {
  int code;
};

void set_error(const std::string& msg);
[[noreturn]] void raise(int code, const std::string& msg);
// raises VFFN_E_CUDA naming `what` when err is not cudaSuccess (and clears a non-sticky error)
void check(cudaError_t err, const char* what);
// after a kernel launch: configuration errors surface here, faults at the next wait
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

// makes `dev` current on the calling thread and returns its stream (created on first use)
cudaStream_t stream(int dev);
// the multiprocessor count of `dev` (for persistent grids)
int sm_count(int dev);

// device memory from the stream-ordered caching allocator, released in stream order when it
// goes out of scope: later kernels on the same stream may reuse the block, earlier ones are done
// with it by the time they could.
void* alloc(int dev, size_t bytes);
void release(int dev, void* p);
struct Scratch {
  int dev;
  void* ptr;
  Scratch(int d, size_t bytes) : dev(d), ptr(alloc(d, bytes)) {}
  ~Scratch() { release(dev, ptr); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T> T* as() const { return static_cast<T*>(ptr); }
};

// ids checked on the device (token ids, targets): a kernel writes the first bad position and its
// value into an int32 [2] block from alloc() (kNoBadIndex, every byte 0x7f so a memset can write
// it: none), the op's own kernels skip their writes when it is set, and the op's worker then reads it
// back and fails with ERR_ARGUMENT, so the failure belongs to the op's outputs.
constexpr int32_t kNoBadIndex = 0x7f7f7f7f;
void finish_index_check(int dev, void* block, const char* what, int64_t limit);  // takes the block

// runs body; turns Status and C++ exceptions into a status code with last_error set.
template <class F>
int entry(F&& body) {
  try {
    body();
    return VFFN_OK;
  } catch (const Status& s) {
    return s.code;
  } catch (const std::bad_alloc&) {
    set_error("host out of memory");
    return VFFN_E_OOM;
  } catch (const std::exception& e) {
    set_error(e.what());
    return VFFN_E_CUDA;
  } catch (...) {
    set_error("unknown failure in the CUDA backend");
    return VFFN_E_CUDA;
  }
}

// ---- argument checks shared by the ops (the napi layer validated already; these guard memory) ----
void require(bool ok, const std::string& msg);  // raises VFFN_E_ARGUMENT
void require_matrix(const View& v, const char* name);   // 2-D, f32|bf16, unit last stride
void require_float(const View& v, const char* name, int ndim);  // f32|bf16 with ndim dims
inline int64_t ld_of(const View& v) { return v.ndim >= 2 ? v.stride[v.ndim - 2] : v.shape[0]; }

inline unsigned blocks_for(int64_t n, int threads, unsigned cap = 65535u * 16u) {
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > int64_t(cap) ? int64_t(cap) : b));
}

// ---- device-side dtype helpers: the same bits as vffn::f32_to_bf16 on the host ----
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
// element i of a float32 or bfloat16 array (dtype uniform across the warp, so the branch is free)
__device__ __forceinline__ float load_f(const void* p, int dtype, int64_t i) {
  return dtype == BF16 ? bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void store_f(void* p, int dtype, int64_t i, float v) {
  if (dtype == BF16)
    static_cast<uint16_t*>(p)[i] = f32_to_bf16_bits(v);
  else
    static_cast<float*>(p)[i] = v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// the GEMM every layer uses: c[M,N] = alpha * op(a) * op(b) + beta * c on the device's stream.
// views as in GemmArgs (2-D, unit last stride, any leading dimension).
void gemm(int dev, const View& c, const View& a, const View& b, bool trans_a, bool trans_b, float alpha, float beta);

// the same kernel with what the FFN layers fuse into it. sizes are upper bounds when rows come
// from device memory (m_limit, row groups); views give pointer, dtype and leading dimension.
// each operand takes cp.async when it has the tile's dtype and 16-byte aligned rows (base and
// leading dimension), whichever its layout; so a bf16 x bf16 weight gradient dW += dYᵀ·X wants
// dY and X as bf16 views: a = dY with a.trans, b = X untransposed, beta = 1. a float32 side
// with bf16_math is rounded in registers; without it the product is tf32.
struct GemmSpec {
  enum Mode { Store = 0, Glu = 1 };
  struct Operand {
    View v;              // stored matrix: a is [M,K] or, trans, [K,M]; b is [K,N] or, trans, [N,K]
    bool trans = false;
    const int* gather = nullptr;  // a, not trans: logical row i of a is stored row gather[i]
    int64_t glu_gate = 0;         // b, trans, Glu mode: pair column j reads rows j (up) and j + glu_gate (gate)
    bool slice_rows = false;      // add the group's expert offset o_g to the row (M or N) index
    bool slice_k = false;         // add o_g to the k index
  };
  int64_t M = 0, N = 0, K = 0;  // Glu: N counts pair columns
  Operand a, b;
  View c;  // Glu: the activation silu(gate)·up [M, N]
  float alpha = 1.f, beta = 0.f;  // Store: beta == 0 never reads c
  int mode = Store;
  float* h = nullptr;                // Glu: pre-activations, up at [i, j], gate at [i, N + j] (null: not kept)
  int64_t h_ld = 0;
  bool c_slice_rows = false, c_slice_cols = false;  // add o_g to c's row / column
  // groups (experts) from device memory: seg_start[g] .. seg_start[g+1] are g's rows (or, with
  // seg_over_k, g's k range, one grid layer per group); o_g = g*(I-E)/(count-1)
  const int* seg_start = nullptr;
  int seg_count = 0;
  bool seg_over_k = false;
  int64_t slice_I = 0, slice_E = 0;
  const int* m_limit = nullptr;  // device count: rows >= *m_limit are skipped
  // with one bf16 operand, round the other to bf16 on load and use bf16 tensor cores (a bfloat16
  // model's layers); otherwise a float32 operand means tf32
  bool bf16_math = false;
};
void gemm_ex(int dev, const GemmSpec& s);

}  // namespace vffn::cuda
