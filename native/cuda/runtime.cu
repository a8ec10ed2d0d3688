// the runtime half of the CUDA backend: the versioned C API the addon dlopens (init, streams, the
// caching allocator, copies, synchronisation) and the shared helpers of common.cuh.
// linked against the static CUDA runtime only: without a driver, cudaGetDeviceCount returns an
// error (35, insufficient driver) and init reports it as text instead of crashing.
// VFFN_CUDA_ALLOC=exact (for compute-sanitizer runs): every block is cudaMalloc'd at exactly the
// bytes asked and cudaFree'd on release, so an overrun or a read of a freed block is visible.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common.cuh"

namespace vffn::cuda {

namespace {

thread_local std::string t_last_error;


// one per device. the addon calls malloc/free only from the device's worker thread, but the
// mutex keeps memory() (from the JS thread) and scratch use from layers consistent.
struct DeviceState {
  std::mutex mu;
  std::atomic<cudaStream_t> stream{nullptr};  // created once, read without the lock
  int sms = 0;
  std::unordered_map<void*, size_t> live;                  // block -> size class
  std::unordered_map<size_t, std::vector<void*>> cached;   // size class -> free blocks
  size_t live_bytes = 0, cached_bytes = 0;
  size_t peak_bytes = 0;  // the most live_bytes has been since the last reset (memory_peak)
};

std::once_flag g_init_once;
int g_init_status = VFFN_E_UNAVAILABLE;
std::string g_init_error;
int g_count = 0;
bool g_exact = false;  // VFFN_CUDA_ALLOC=exact: no size classes, no cache
std::vector<std::unique_ptr<DeviceState>>* g_devices = nullptr;

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

DeviceState& state(int dev) {
  if (!g_devices || dev < 0 || dev >= g_count)
    raise(g_devices ? VFFN_E_ARGUMENT : VFFN_E_UNAVAILABLE,
          g_devices ? "no CUDA device " + std::to_string(dev) : std::string("CUDA backend not initialised"));
  return *(*g_devices)[size_t(dev)];
}

// blocks come in size classes so that a steady workload finds its sizes in the cache:
// multiples of 512 B up to 1 MiB, then 8 classes per power of two (at most 12.5% slack).
size_t size_class(size_t n) {
  if (n <= 512) return 512;
  size_t step = 512;
  if (n > (size_t(1) << 20)) {
    size_t floor_pow2 = size_t(1) << (63 - __builtin_clzll(uint64_t(n)));
    step = floor_pow2 / 8;
  }
  return (n + step - 1) / step * step;
}

// hands every cached block back to the driver. the stream is drained first: a cached block may
// still be read by a kernel queued before its free.
void release_cache(DeviceState& s) {
  if (s.cached_bytes == 0) return;
  cudaStreamSynchronize(s.stream.load());
  for (auto& kv : s.cached)
    for (void* p : kv.second) cudaFree(p);
  s.cached.clear();
  s.cached_bytes = 0;
}

void init_once() {
  if (const char* mode = std::getenv("VFFN_CUDA_ALLOC")) {
    g_exact = std::strcmp(mode, "exact") == 0;
    if (!g_exact && std::strcmp(mode, "caching") != 0 && *mode) {
      g_init_error = std::string("VFFN_CUDA_ALLOC must be 'exact' or 'caching', got '") + mode + "'";
      g_init_status = VFFN_E_UNAVAILABLE;
      return;
    }
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaErrorNoDevice) {
    cudaGetLastError();
    count = 0;
  } else if (e != cudaSuccess) {
    cudaGetLastError();
    g_init_error = e == cudaErrorInsufficientDriver
                       ? "CUDA driver not found or too old (cudaGetDeviceCount: " + cuda_text(e) + ")"
                       : "CUDA runtime could not start (cudaGetDeviceCount: " + cuda_text(e) + ")";
    g_init_status = VFFN_E_UNAVAILABLE;
    return;
  }
  g_devices = new std::vector<std::unique_ptr<DeviceState>>();
  for (int i = 0; i < count; i++) g_devices->emplace_back(new DeviceState());
  g_count = count;
  g_init_status = VFFN_OK;
}

}  // namespace

void set_error(const std::string& msg) { t_last_error = msg; }

void raise(int code, const std::string& msg) {
  set_error(msg);
  throw Status{code};
}

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  raise(err == cudaErrorMemoryAllocation ? VFFN_E_OOM : VFFN_E_CUDA, std::string(what) + ": " + cuda_text(err));
}

void require(bool ok, const std::string& msg) {
  if (!ok) raise(VFFN_E_ARGUMENT, msg);
}

void require_float(const View& v, const char* name, int ndim) {
  require(v.data != nullptr || v.numel() == 0, std::string(name) + ": missing");
  require(v.ndim == ndim, std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                              std::to_string(v.ndim));
  require(v.dtype == F32 || v.dtype == BF16, std::string(name) + ": expected float32 or bfloat16, got " +
                                                 dtype_name(v.dtype));
}

void require_matrix(const View& v, const char* name) {
  require_float(v, name, 2);
  require(v.shape[1] <= 1 || v.stride[1] == 1, std::string(name) + ": rows must be contiguous (last stride 1)");
  require(v.shape[0] <= 1 || v.stride[0] >= v.shape[1], std::string(name) + ": leading dimension smaller than a row");
}

cudaStream_t stream(int dev) {
  DeviceState& s = state(dev);
  check(cudaSetDevice(dev), "cudaSetDevice");
  if (cudaStream_t st = s.stream.load()) return st;
  std::lock_guard<std::mutex> lk(s.mu);
  if (!s.stream.load()) {
    cudaDeviceProp p;
    check(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
    // the kernels use sm_80 instructions (cp.async, bf16 mma); older chips have no image to run
    if (p.major < 8)
      raise(VFFN_E_UNSUPPORTED, "cuda:" + std::to_string(dev) + " is sm_" + std::to_string(p.major * 10 + p.minor) +
                                    "; this build runs on sm_80 or newer");
    s.sms = p.multiProcessorCount;
    cudaStream_t st;
    check(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
    s.stream = st;
  }
  return s.stream.load();
}

int sm_count(int dev) {
  stream(dev);
  return state(dev).sms;
}

void* alloc(int dev, size_t bytes) {
  DeviceState& s = state(dev);
  stream(dev);
  // exact mode: the sanitizer sees the block as asked (a zero-byte block still gets an address)
  size_t cls = g_exact ? std::max<size_t>(bytes, 1) : size_class(bytes);
  std::lock_guard<std::mutex> lk(s.mu);
  auto it = s.cached.find(cls);
  if (it != s.cached.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    s.cached_bytes -= cls;
    s.live.emplace(p, cls);
    s.live_bytes += cls;
    s.peak_bytes = std::max(s.peak_bytes, s.live_bytes);
    return p;
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, cls);
  if (e == cudaErrorMemoryAllocation) {
    // blocks of other sizes may be what stands in the way: give them back and try once more
    cudaGetLastError();
    size_t freed = s.cached_bytes;
    release_cache(s);
    e = cudaMalloc(&p, cls);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      raise(VFFN_E_OOM, "out of memory on cuda:" + std::to_string(dev) + ": could not allocate " +
                            std::to_string(bytes) + " bytes (" + std::to_string(s.live_bytes) +
                            " bytes in use, " + std::to_string(freed) + " cached bytes released first)");
    }
  }
  check(e, "cudaMalloc");
  s.live.emplace(p, cls);
  s.live_bytes += cls;
  s.peak_bytes = std::max(s.peak_bytes, s.live_bytes);
  return p;
}

void release(int dev, void* p) {
  if (!p) return;
  DeviceState& s = state(dev);
  std::lock_guard<std::mutex> lk(s.mu);
  auto it = s.live.find(p);
  if (it == s.live.end()) raise(VFFN_E_ARGUMENT, "free: pointer not allocated by this device's allocator");
  if (g_exact) {
    // kernels queued before the free may still read the block: drain the stream, then hand it back
    const size_t bytes = it->second;
    s.live_bytes -= bytes;
    s.live.erase(it);
    // no raise: Scratch frees from destructors, and a failed stream shows at the next op's check
    if (cudaStreamSynchronize(s.stream.load()) == cudaSuccess) cudaFree(p);
    cudaGetLastError();
    return;
  }
  // stream order makes immediate reuse safe: whatever is queued next runs after every reader
  s.cached[it->second].push_back(p);
  s.cached_bytes += it->second;
  s.live_bytes -= it->second;
  s.live.erase(it);
}

void finish_index_check(int dev, void* block, const char* what, int64_t limit) {
  // the op's own failure must reach the op's outputs (errors belong to tensors), so its worker
  // waits here for the check; the JS thread never does
  int32_t h[2] = {kNoBadIndex, 0};
  cudaError_t e = cudaMemcpyAsync(h, block, sizeof h, cudaMemcpyDeviceToHost, stream(dev));
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream(dev));
  release(dev, block);
  check(e, what);
  if (h[0] != kNoBadIndex)
    raise(VFFN_E_ARGUMENT, std::string(what) + ": id " + std::to_string(h[1]) + " at position " + std::to_string(h[0]) +
                               " is outside the vocabulary [0, " + std::to_string(limit) + ")");
}

namespace {

const char* api_last_error() { return t_last_error.c_str(); }

int api_init(int* count) {
  return entry([&] {
    std::call_once(g_init_once, init_once);
    if (g_init_status != VFFN_OK) raise(g_init_status, g_init_error);
    *count = g_count;
  });
}

int api_device_name(int dev, char* buf, size_t len) {
  return entry([&] {
    state(dev);
    cudaDeviceProp p;
    check(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
    if (len) std::snprintf(buf, len, "%s (sm_%d%d)", p.name, p.major, p.minor);
  });
}

int api_malloc(int dev, size_t bytes, void** ptr) {
  return entry([&] { *ptr = alloc(dev, bytes); });
}

int api_free(int dev, void* ptr) {
  return entry([&] { release(dev, ptr); });
}

int api_memory(int dev, size_t* live, size_t* cached) {
  return entry([&] {
    DeviceState& s = state(dev);
    std::lock_guard<std::mutex> lk(s.mu);
    *live = s.live_bytes;
    *cached = s.cached_bytes;
  });
}

int api_memory_peak(int dev, size_t* peak, int reset) {
  return entry([&] {
    DeviceState& s = state(dev);
    std::lock_guard<std::mutex> lk(s.mu);
    if (reset) s.peak_bytes = s.live_bytes;
    *peak = s.peak_bytes;
  });
}

int api_empty_cache(int dev) {
  return entry([&] {
    DeviceState& s = state(dev);
    stream(dev);
    std::lock_guard<std::mutex> lk(s.mu);
    release_cache(s);
  });
}

// the host buffer may be freed as soon as this returns, and a copy from pageable memory is not
// guaranteed to have read it by then, so the stream is drained (uploads are off the hot path)
int api_memcpy_h2d(int dev, void* dst, const void* src, size_t bytes) {
  return entry([&] {
    cudaStream_t st = stream(dev);
    if (!bytes) return;
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st), "copy to device");
    check(cudaStreamSynchronize(st), "copy to device");
  });
}

int api_memcpy_d2h(int dev, void* dst, const void* src, size_t bytes) {
  return entry([&] {
    cudaStream_t st = stream(dev);
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st), "copy to host");
    check(cudaStreamSynchronize(st), "copy to host");
  });
}

int api_synchronize(int dev) {
  return entry([&] {
    check(cudaStreamSynchronize(stream(dev)), "synchronize");
  });
}

const vffn_cuda_api g_api = {
    VFFN_CUDA_API_VERSION, api_last_error, api_init,     api_device_name, api_malloc,  api_free,
    api_memory,            api_empty_cache, api_memcpy_h2d, api_memcpy_d2h, api_synchronize,
    api_memory_peak,
};

}  // namespace
}  // namespace vffn::cuda

VFFN_CUDA_EXPORT const vffn_cuda_api* vffn_cuda_get_api(int version) {
  return version == VFFN_CUDA_API_VERSION ? &vffn::cuda::g_api : nullptr;
}
