// devices and reference-counted storage. a queued op holds a StoragePtr to everything it
// touches, so disposing a tensor in JS never frees memory that queued work still reads.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "cuda_api.h"
#include "stream.h"

namespace vffn {

enum DeviceType : int32_t { kCPU = 0, kCUDA = 1 };

class Device {
 public:
  Device(DeviceType type, int index);
  DeviceType type;
  int index;
  Stream stream;
  std::atomic<int64_t> live_bytes{0};  // CPU: bytes held by storages; CUDA: mirrors the allocator
  std::atomic<int64_t> peak_bytes{0};  // CPU: the most live_bytes has been since the last reset_peak()
  void add_live(int64_t n);            // CPU: live_bytes += n, raising peak_bytes when it passes it
  void reset_peak() { peak_bytes.store(live_bytes.load()); }
  std::string name() const;
};

// why a storage's contents are not valid: the op that failed, its code and message. shared by
// every storage that failure reached, so a wait reports the original error.
struct Failure {
  std::string op, code, message;
};
using FailurePtr = std::shared_ptr<const Failure>;

struct Storage {
  // deferred (CPU): the memory is taken the first time data() is called (on the worker, by the
  // first op that runs on it) instead of now, so queued work holds memory only while it runs
  Storage(Device* dev, size_t bytes, bool deferred = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  // CPU memory exists from creation unless deferred; CUDA memory is taken from the caching
  // allocator the first time the device's worker touches it (stream order makes that safe
  // without locks). a deferred CPU storage allocates under its lock; ERR_OOM when it cannot.
  void* data();
  // the memory if it has been taken, else null (never allocates)
  void* data_if_taken() const { return ptr_.load(); }
  Device* device;
  size_t bytes;
  // counts the ops that have written it (each op plan bumps it after running, failed or not), so
  // a copy derived from the contents (a recorded step's packed weights) can tell it is stale.
  // written and read on the device's worker.
  std::atomic<uint64_t> version{0};

  // errors belong to tensors: set by the op that failed (or that read a failed input), cleared by
  // an op that overwrites the whole storage. read and written on workers, in stream order.
  FailurePtr failure() const {
    std::lock_guard<std::mutex> lk(mu_);
    return failure_;
  }
  void set_failure(FailurePtr f) {
    std::lock_guard<std::mutex> lk(mu_);
    failure_ = std::move(f);
  }

 private:
  std::atomic<void*> ptr_{nullptr};
  mutable std::mutex mu_;
  FailurePtr failure_;
};
using StoragePtr = std::shared_ptr<Storage>;

// the process-wide devices; cuda(index) throws ERR_CUDA_UNAVAILABLE / ERR_DEVICE when it can't.
Device* cpu_device();
Device* cuda_device(int index);

// the CUDA backend, loaded on first use. null when unavailable; reason says why.
const vffn_cuda_api* cuda_api(std::string* reason = nullptr);
int cuda_device_count();
// looks up `vffn_cuda_<op>` in the loaded library; throws ERR_UNSUPPORTED when absent.
void* cuda_symbol(const char* op);
// turns a VFFN_* status into a thrown Error naming `what`.
void cuda_check(int status, const char* what);

// CPU threads used inside each op (a pool per process).
int cpu_threads();
void set_cpu_threads(int n);

}  // namespace vffn
