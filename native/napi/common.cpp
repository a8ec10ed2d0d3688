#include "common.h"

#include "storage.h"

namespace vffn::napi {

std::vector<RegisterFn>& registry() {
  static std::vector<RegisterFn> r;
  return r;
}
Registrar::Registrar(RegisterFn fn) { registry().push_back(fn); }

Napi::Error js_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Napi::Value guard(const Napi::CallbackInfo& info, const std::function<Napi::Value()>& body) {
  Napi::Env env = info.Env();
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    throw js_error(env, e.code, e.message);
  } catch (const std::bad_alloc&) {
    throw js_error(env, "ERR_OOM", "out of memory");
  } catch (const std::exception& e) {
    throw js_error(env, "ERR_INTERNAL", e.what());
  }
}

int64_t int_arg(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) fail("ERR_ARGUMENT", std::string(name) + ": expected an integer");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != double(int64_t(d))) fail("ERR_ARGUMENT", std::string(name) + ": expected an integer, got " + std::to_string(d));
  return int64_t(d);
}
double num_arg(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) fail("ERR_ARGUMENT", std::string(name) + ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}
bool bool_arg(const Napi::Value& v, const char* name) {
  if (!v.IsBoolean()) fail("ERR_ARGUMENT", std::string(name) + ": expected a boolean");
  return v.As<Napi::Boolean>().Value();
}

Device* device_arg(const Napi::Value& type, const Napi::Value& index) {
  int64_t t = int_arg(type, "device type"), i = int_arg(index, "device index");
  if (t == kCPU) return cpu_device();
  if (t == kCUDA) return cuda_device(int(i));
  fail("ERR_DEVICE", "device: unknown device type " + std::to_string(t));
}

TensorArg tensor_arg(const Napi::Value& v, const char* name) {
  if (!v.IsObject()) fail("ERR_ARGUMENT", std::string(name) + ": expected a Tensor");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value h = o.Get("_h");
  if (!h.IsObject() || !h.As<Napi::Object>().InstanceOf(StorageWrap::constructor(v.Env()).Value()))
    fail("ERR_ARGUMENT", std::string(name) + ": expected a Tensor");
  StorageWrap* sw = StorageWrap::Unwrap(h.As<Napi::Object>());
  if (!sw->storage) fail("ERR_DISPOSED", std::string(name) + ": tensor has been disposed");
  TensorArg t;
  t.storage = sw->storage;
  t.device = sw->storage->device;
  t.offset = int_arg(o.Get("offset"), name);
  t.meta.dtype = int32_t(int_arg(o.Get("_dt"), name));
  Napi::Value shape = o.Get("shape"), strides = o.Get("strides");
  if (!shape.IsArray() || !strides.IsArray()) fail("ERR_ARGUMENT", std::string(name) + ": malformed Tensor");
  Napi::Array sa = shape.As<Napi::Array>(), st = strides.As<Napi::Array>();
  if (sa.Length() > size_t(kMaxDims) || st.Length() != sa.Length())
    fail("ERR_SHAPE", std::string(name) + ": at most " + std::to_string(kMaxDims) + " dimensions are supported");
  t.meta.ndim = int32_t(sa.Length());
  int64_t hi = 0;  // highest element offset touched, to check bounds against the storage
  bool empty = false;
  for (uint32_t i = 0; i < sa.Length(); i++) {
    t.meta.shape[i] = int_arg(sa.Get(i), name);
    t.meta.stride[i] = int_arg(st.Get(i), name);
    if (t.meta.shape[i] < 0 || t.meta.stride[i] < 0) fail("ERR_ARGUMENT", std::string(name) + ": malformed Tensor");
    if (t.meta.shape[i] == 0) empty = true;
    hi += (t.meta.shape[i] - 1) * t.meta.stride[i];
  }
  int64_t es = dtype_size(t.meta.dtype);
  if (t.offset < 0 || (!empty && (t.offset + hi + 1) * es > int64_t(t.storage->bytes)))
    fail("ERR_ARGUMENT", std::string(name) + ": view reaches outside its storage");
  return t;
}

void enqueue(Device* dev, const char* op, std::function<void()> fn) {
  std::string why;
  if (dev->stream.fatal(&why)) fail("ERR_DEVICE", dev->name() + " has failed and cannot run '" + op + "': " + why);
  dev->stream.enqueue(op, std::move(fn));
}

void cuda_call(Device* dev, const char* op, const void* args) {
  using Fn = int (*)(int, const void*);
  auto fn = reinterpret_cast<Fn>(cuda_symbol(op));
  cuda_check(fn(dev->index, args), op);
}

}  // namespace vffn::napi
