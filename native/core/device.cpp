#include "device.h"

#include <dlfcn.h>

#include <cstdlib>
#include <new>
#include <vector>

#include "error.h"

namespace vffn {

Device::Device(DeviceType t, int i)
    : type(t), index(i), stream(t == kCPU ? "cpu" : "cuda:" + std::to_string(i)) {}

void Device::add_live(int64_t n) {
  const int64_t now = live_bytes.fetch_add(n) + n;
  int64_t peak = peak_bytes.load();
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now)) {
  }
}

std::string Device::name() const { return type == kCPU ? "cpu" : "cuda:" + std::to_string(index); }

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

Storage::Storage(Device* dev, size_t n, bool deferred) : device(dev), bytes(n) {
  if (dev->type == kCPU && !deferred) {
    // 64-byte alignment for vector loads; never a zero-size request
    void* p = std::aligned_alloc(64, round_up(n ? n : 1, 64));
    if (!p) fail("ERR_OOM", "out of memory: could not allocate " + std::to_string(n) + " bytes on cpu");
    ptr_.store(p);
    dev->add_live(int64_t(n));
  }
}

Storage::~Storage() {
  void* p = ptr_.load();
  if (!p) return;
  if (device->type == kCPU) {
    std::free(p);
    device->live_bytes -= int64_t(bytes);
    return;
  }
  // CUDA: hand the block back in stream order, after every op queued before this point
  Device* dev = device;
  const vffn_cuda_api* api = cuda_api();
  if (api) dev->stream.enqueue("free", [api, dev, p] { api->free(dev->index, p); });
}

void* Storage::data() {
  void* p = ptr_.load(std::memory_order_acquire);
  if (p) return p;
  if (device->type == kCUDA) {
    const vffn_cuda_api* api = cuda_api();
    if (!api) fail("ERR_CUDA_UNAVAILABLE", "CUDA backend unavailable");
    cuda_check(api->malloc(device->index, bytes ? bytes : 1, &p), "allocate");
    ptr_.store(p, std::memory_order_release);
    return p;
  }
  // a deferred CPU storage: the first caller allocates
  std::lock_guard<std::mutex> lk(mu_);
  p = ptr_.load();
  if (p) return p;
  p = std::aligned_alloc(64, round_up(bytes ? bytes : 1, 64));
  if (!p) fail("ERR_OOM", "out of memory: could not allocate " + std::to_string(bytes) + " bytes on cpu");
  device->add_live(int64_t(bytes));
  ptr_.store(p, std::memory_order_release);
  return p;
}

Device* cpu_device() {
  static Device* d = new Device(kCPU, 0);  // lives for the process: its worker outlives every env
  return d;
}

// ---- the CUDA backend library, loaded on demand ----

namespace {
struct CudaLoader {
  std::once_flag once;
  void* handle = nullptr;
  const vffn_cuda_api* api = nullptr;
  int count = 0;
  std::string reason;
  std::mutex mu;
  std::vector<Device*> devices;
};
CudaLoader& loader() {
  static CudaLoader* l = new CudaLoader();
  return *l;
}

std::string library_path() {
  if (const char* p = std::getenv("VFFN_CUDA_LIBRARY")) return p;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&library_path), &info) && info.dli_fname) {
    std::string self = info.dli_fname;
    size_t slash = self.rfind('/');
    return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/libvffn_cuda.so";
  }
  return "libvffn_cuda.so";
}

void load() {
  CudaLoader& l = loader();
  std::string path = library_path();
  l.handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!l.handle) {
    const char* e = dlerror();
    l.reason = "CUDA backend library not loaded (" + std::string(e ? e : path) + ")";
    return;
  }
  auto get = reinterpret_cast<vffn_cuda_get_api_fn>(dlsym(l.handle, "vffn_cuda_get_api"));
  const vffn_cuda_api* api = get ? get(VFFN_CUDA_API_VERSION) : nullptr;
  if (!api) {
    l.reason = "CUDA backend library at " + path + " does not speak API version " +
               std::to_string(VFFN_CUDA_API_VERSION);
    return;
  }
  int count = 0;
  if (api->init(&count) != VFFN_OK) {
    l.reason = api->last_error();
    return;
  }
  if (count <= 0) {
    l.reason = "no CUDA device found";
    return;
  }
  l.count = count;
  l.api = api;
  l.devices.assign(size_t(count), nullptr);
}
}  // namespace

const vffn_cuda_api* cuda_api(std::string* reason) {
  CudaLoader& l = loader();
  std::call_once(l.once, load);
  if (!l.api && reason) *reason = l.reason;
  return l.api;
}

int cuda_device_count() {
  return cuda_api() ? loader().count : 0;
}

Device* cuda_device(int index) {
  std::string reason;
  if (!cuda_api(&reason)) fail("ERR_CUDA_UNAVAILABLE", "CUDA is not available: " + reason);
  CudaLoader& l = loader();
  if (index < 0 || index >= l.count)
    fail("ERR_DEVICE", "device: expected cuda:0.." + std::to_string(l.count - 1) + ", got cuda:" +
                           std::to_string(index));
  std::lock_guard<std::mutex> lk(l.mu);
  if (!l.devices[size_t(index)]) l.devices[size_t(index)] = new Device(kCUDA, index);
  return l.devices[size_t(index)];
}

void* cuda_symbol(const char* op) {
  std::string reason;
  if (!cuda_api(&reason)) fail("ERR_CUDA_UNAVAILABLE", "CUDA is not available: " + reason);
  std::string name = std::string("vffn_cuda_") + op;
  void* sym = dlsym(loader().handle, name.c_str());
  if (!sym) fail("ERR_UNSUPPORTED", std::string("op '") + op + "' is not implemented by the CUDA backend");
  return sym;
}

void cuda_check(int status, const char* what) {
  if (status == VFFN_OK) return;
  const vffn_cuda_api* api = cuda_api();
  std::string msg = std::string(what) + ": " + (api ? api->last_error() : "CUDA backend unavailable");
  switch (status) {
    case VFFN_E_OOM: fail("ERR_OOM", msg);
    case VFFN_E_ARGUMENT: fail("ERR_ARGUMENT", msg);
    case VFFN_E_UNAVAILABLE: fail("ERR_CUDA_UNAVAILABLE", msg);
    case VFFN_E_UNSUPPORTED: fail("ERR_UNSUPPORTED", msg);
    default: fail("ERR_CUDA", msg);
  }
}

}  // namespace vffn
