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
#include "../core/view.h"

namespace vffn::napi {

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

// reads a lib/ Tensor object (fields _h, _dt, offset, shape, strides). `name` is the argument's
// name for errors. throws ERR_DISPOSED / ERR_ARGUMENT.
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
  std::vector<Entry> reads, writes;
  std::vector<bool> write_is_out;
  bool gate_ = false, same_view_ok_ = false;
};

// queue an op on a device with its reads and writes (see Io); throws the device's fatal error
// if it has failed for good, and ERR_ARGUMENT for aliased outputs. fn may throw: the failure
// goes to the op's outputs. throw InputFailed to pass on a failure that came from elsewhere.
void enqueue(Device* dev, const char* op, Io io, std::function<void()> fn);

// one queued op with its plan: the storages it reads and writes, which writes clear an earlier
// failure, whether it is gated. run() does on the worker what enqueue promises; a recorded step
// (graph.cpp) keeps these and runs them again on every replay.
struct Planned {
  Device* dev;
  const char* op;
  std::vector<StoragePtr> reads, writes;
  std::vector<bool> clears;
  bool gate;
  std::function<void()> fn;
  void run();
};

// the plan enqueue() queues: for callers that run it inside a task of their own (graph.cpp)
std::shared_ptr<Planned> plan_of(Device* dev, const char* op, const Io& io, std::function<void()> fn);

// a step being recorded on this thread (graph.cpp), or null: enqueue() hands its ops to it
// instead of the stream, alloc() tells it what it owns, tensor_arg() what it reads.
struct Recorder;
class StorageWrap;
Recorder* recording();
void record_op(Recorder* r, std::shared_ptr<Planned> p);
void record_alloc(Recorder* r, const StoragePtr& s);
void record_arg(Recorder* r, StorageWrap* handle);
// throws ERR_ARGUMENT when this thread is recording: `what` (a wait, a copy between devices) runs
// outside any op plan, so a replay could not repeat it
void not_recording(const char* what);

struct InputFailed {
  FailurePtr failure;
};

// the failure of the first read storage that carries one (on the worker, in stream order)
FailurePtr first_failure(const std::vector<StoragePtr>& reads);

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
