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
Device* device_arg(const Napi::Value& type, const Napi::Value& index);

Napi::Error js_error(Napi::Env env, const std::string& code, const std::string& message);

// runs body, converting vffn::Error (and std exceptions) into thrown JS errors.
Napi::Value guard(const Napi::CallbackInfo& info, const std::function<Napi::Value()>& body);

// queue work on a device; throws the device's fatal error if it has failed for good.
void enqueue(Device* dev, const char* op, std::function<void()> fn);

// calls vffn_cuda_<op>(device, args) and throws on failure. only from a worker task.
void cuda_call(Device* dev, const char* op, const void* args);

// module registration: each napi file adds its functions with VFFN_REGISTER(fn).
using RegisterFn = void (*)(Napi::Env, Napi::Object);
struct Registrar {
  explicit Registrar(RegisterFn fn);
};
std::vector<RegisterFn>& registry();
#define VFFN_REGISTER(fn) static ::vffn::napi::Registrar vffn_registrar_##fn(fn)

// small argument readers
int64_t int_arg(const Napi::Value& v, const char* name);
double num_arg(const Napi::Value& v, const char* name);
bool bool_arg(const Napi::Value& v, const char* name);

}  // namespace vffn::napi
