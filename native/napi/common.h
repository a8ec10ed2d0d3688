// shared napi glue: reading JS tensors, turning native errors into JS errors, op registration
// and enqueueing. no math here.
#pragma once
#define NAPI_VERSION 8
#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "../core/device.h"
#include "../core/dtype.h"
#include "../core/error.h"
#include "../core/stream.h"
#include "../core/view.h"

namespace vffn::napi {

// a vector whose first N elements live inside it: an op's few reads and writes cost no heap
// allocation on the JS thread (and no free on the worker). contiguous like std::vector.
template <class T, size_t N>
class SmallVec {
 public:
  void push_back(T v) {
    if (heap_.empty() && n_ < N) {
      inl_[n_++] = std::move(v);
      return;
    }
    if (heap_.empty()) {
      heap_.reserve(2 * N);
      for (size_t i = 0; i < n_; i++) heap_.push_back(std::move(inl_[i]));
    }
    heap_.push_back(std::move(v));
  }
  size_t size() const { return heap_.empty() ? n_ : heap_.size(); }
  bool empty() const { return size() == 0; }
  T* begin() { return heap_.empty() ? inl_ : heap_.data(); }
  T* end() { return begin() + size(); }
  const T* begin() const { return heap_.empty() ? inl_ : heap_.data(); }
  const T* end() const { return begin() + size(); }
  T& operator[](size_t i) { return begin()[i]; }
  const T& operator[](size_t i) const { return begin()[i]; }

 private:
  T inl_[N] = {};
  size_t n_ = 0;
  std::vector<T> heap_;
};

// a JS Tensor as an op sees it. the pointer is resolved on the device's worker (CUDA memory
// is allocated lazily there), so ops capture TensorArg and call view() inside the task.
struct TensorArg {
  StoragePtr storage;
  Device* device = nullptr;
  const char* name = "tensor";  // the argument's name, for errors (a string literal or a stable field name)
  int64_t offset = 0;  // elements
  View meta;           // data == nullptr until view()
  View view() const {
    View v = meta;
    v.data = static_cast<char*>(storage->data()) + offset * dtype_size(meta.dtype);
    return v;
  }
  int64_t numel() const { return meta.numel(); }
};

// reads a tensor argument: a handle id (a lib/ Tensor's _id, see storage.h) or a Tensor object.
// `name` is the argument's name for errors. throws ERR_DISPOSED / ERR_ARGUMENT.
TensorArg tensor_arg(const Napi::Value& v, const char* name);
// a view's dtype code, offset, shape and strides as JS values, checked against t.storage (every
// check tensor_arg makes of a Tensor object): fills t.meta and t.offset
void read_view(TensorArg& t, const Napi::Value& dtype, const Napi::Value& offset, const Napi::Value& shape,
               const Napi::Value& strides, const char* name);
Device* device_arg(const Napi::Value& type, const Napi::Value& index);

Napi::Error js_error(Napi::Env env, const std::string& code, const std::string& message);

// runs body, converting vffn::Error (and std exceptions) into thrown JS errors.
Napi::Value guard(const Napi::CallbackInfo& info, const std::function<Napi::Value()>& body);

// what an op reads and writes. errors belong to tensors: when any tensor the op reads carries a
// failure, the op does no work and its outputs carry that same failure; when the op itself
// throws, its outputs carry the new failure; when it succeeds, an output it overwrites whole
// (out(), covering its storage) is valid again. gate() makes a failed input a no-op instead:
// the outputs keep their values and stay valid (an optimizer update fed failed gradients).
class Io {
 public:
  // read only
  Io& in(const TensorArg& t);
  // written whole (a success clears an earlier failure of its storage)
  Io& out(const TensorArg& t);
  // read and written (accumulated, updated in place)
  Io& inout(const TensorArg& t);
  Io& gate() {
    gate_ = true;
    return *this;
  }
  // an output may be exactly one of the inputs (same view): the kernel is written for it
  Io& same_view_ok() {
    same_view_ok_ = true;
    return *this;
  }
  // throws ERR_ARGUMENT when an output overlaps a read-only input (the kernels assume no aliasing)
  void check_aliasing() const;

  struct Entry {
    StoragePtr storage;
    int64_t begin, end;  // the byte range the view can touch
    bool whole;          // an out() view covering its whole storage
    const char* name;
    View meta;
    int64_t offset;
  };
  SmallVec<Entry, 6> reads;
  SmallVec<Entry, 4> writes;
  SmallVec<uint8_t, 4> write_is_out;
  bool gate_ = false, same_view_ok_ = false;
};

// one queued op with its plan: the storages it reads and writes, which writes clear an earlier
// failure, whether it is gated. run() does on the worker what enqueue promises; a recorded step
// (graph.cpp) keeps these and runs them again on every replay. the op's work is call(), which a
// PlannedFn holds inline (one allocation per op).
struct Planned : Runnable {
  Device* dev;
  const char* op;
  SmallVec<StoragePtr, 8> reads;
  SmallVec<StoragePtr, 4> writes;
  SmallVec<uint8_t, 4> clears;
  bool gate;
  virtual void call() = 0;
  void run() override;
};
template <class F>
struct PlannedFn final : Planned {
  F f;
  explicit PlannedFn(F fn) : f(std::move(fn)) {}
  void call() override { f(); }
};

// fills a plan's device, name, reads and writes from io (throws ERR_ARGUMENT for aliased outputs)
void fill_plan(Planned& plan, Device* dev, const char* op, const Io& io);
// queues a filled plan (or hands it to the step being recorded); throws the device's fatal error
void enqueue_plan(std::shared_ptr<Planned> plan);

// the plan enqueue() queues: for callers that run it inside a task of their own (graph.cpp)
template <class F>
std::shared_ptr<Planned> plan_of(Device* dev, const char* op, const Io& io, F&& fn) {
  auto plan = std::make_shared<PlannedFn<std::decay_t<F>>>(std::forward<F>(fn));
  fill_plan(*plan, dev, op, io);
  return plan;
}

// queue an op on a device with its reads and writes (see Io); throws the device's fatal error
// if it has failed for good, and ERR_ARGUMENT for aliased outputs. fn may throw: the failure
// goes to the op's outputs. throw InputFailed to pass on a failure that came from elsewhere.
template <class F>
void enqueue(Device* dev, const char* op, const Io& io, F&& fn) {
  enqueue_plan(plan_of(dev, op, io, std::forward<F>(fn)));
}

// a step being recorded on this thread (graph.cpp), or null: enqueue() hands its ops to it
// instead of the stream, alloc() tells it what it owns, tensor_arg() what it reads.
struct Recorder;
Recorder* recording();
void record_op(Recorder* r, std::shared_ptr<Planned> p);
void record_alloc(Recorder* r, const StoragePtr& s);
// `id` names a live handle on storage s
void record_arg(Recorder* r, double id, Storage* s);
// throws ERR_ARGUMENT when this thread is recording: `what` (a wait, a copy between devices) runs
// outside any op plan, so a replay could not repeat it
void not_recording(const char* what);

struct InputFailed {
  FailurePtr failure;
};

// the failure of the first read storage that carries one (on the worker, in stream order)
FailurePtr first_failure(const StoragePtr* begin, const StoragePtr* end);
inline FailurePtr first_failure(const std::vector<StoragePtr>& reads) { return first_failure(reads.data(), reads.data() + reads.size()); }
template <size_t N>
FailurePtr first_failure(const SmallVec<StoragePtr, N>& reads) {
  return first_failure(reads.begin(), reads.end());
}

// overflow-checked int64 arithmetic for sizes from JS; throws ERR_ARGUMENT naming `what`
int64_t checked_mul(int64_t a, int64_t b, const char* what);
int64_t checked_add(int64_t a, int64_t b, const char* what);

// calls vffn_cuda_<op>(device, args) and throws on failure. only from a worker task.
void cuda_call(Device* dev, const char* op, const void* args);

// module registration: each napi file adds its functions with VFFN_REGISTER(fn).
using RegisterFn = void (*)(Napi::Env, Napi::Object);
struct Registrar {
  explicit Registrar(RegisterFn fn);
};
std::vector<RegisterFn>& registry();
#define VFFN_REGISTER(fn) static ::vffn::napi::Registrar vffn_registrar_##fn(fn)

// throws `code` with `msg` unless ok (the entry points' memory-safety checks)
inline void need(bool ok, const char* code, const std::string& msg) {
  if (!ok) fail(code, msg);
}

// small argument readers
int64_t int_arg(const Napi::Value& v, const char* name);
double num_arg(const Napi::Value& v, const char* name);
bool bool_arg(const Napi::Value& v, const char* name);

}  // namespace vffn::napi
