// the C boundary between the addon and the dlopen'ed CUDA backend library (libvffn_cuda.so).
// the library exports vffn_cuda_get_api for memory and copies, and one `vffn_cuda_<op>` symbol
// per op direction taking (device, const <Op>Args*). every entry returns a VFFN_* status; the
// text of the last failure on the calling thread comes from last_error().
#pragma once
#include <cstddef>
#include <cstdint>

#define VFFN_CUDA_API_VERSION 2

enum {
  VFFN_OK = 0,
  VFFN_E_OOM = 1,          // ERR_OOM: the device stays usable
  VFFN_E_CUDA = 2,         // ERR_CUDA: a kernel or runtime failure
  VFFN_E_ARGUMENT = 3,     // ERR_ARGUMENT: something the caller should have caught
  VFFN_E_UNAVAILABLE = 4,  // ERR_CUDA_UNAVAILABLE
  VFFN_E_UNSUPPORTED = 5,  // ERR_UNSUPPORTED: op or dtype not built for CUDA
};

extern "C" {

struct vffn_cuda_api {
  int version;
  const char* (*last_error)(void);
  // probes the runtime and driver; sets *count (0 when no device) and never crashes.
  int (*init)(int* count);
  int (*device_name)(int dev, char* buf, size_t len);
  // stream-ordered caching allocator: call only from the device's worker thread.
  int (*malloc)(int dev, size_t bytes, void** ptr);
  int (*free)(int dev, void* ptr);
  int (*memory)(int dev, size_t* live, size_t* cached);
  int (*empty_cache)(int dev);
  // copies in stream order; d2h and synchronize return once the copy or stream is done.
  int (*memcpy_h2d)(int dev, void* dst, const void* src, size_t bytes);
  int (*memcpy_d2h)(int dev, void* dst, const void* src, size_t bytes);
  int (*synchronize)(int dev);
  // the most bytes live at once since the last reset (reset != 0 first sets it to the live bytes).
  int (*memory_peak)(int dev, size_t* peak, int reset);
};

typedef const vffn_cuda_api* (*vffn_cuda_get_api_fn)(int version);
}
