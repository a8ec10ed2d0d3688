#include "common.h"

#include <cstdio>

#include "storage.h"

namespace vffn::napi {

std::vector<RegisterFn>& registry() {
  static std::vector<RegisterFn> r;
  return r;
}
Registrar::Registrar(RegisterFn fn) { registry().push_back(fn); }

Napi::Error js_error(Napi::Env env, const std::string& code, const std::string& message) {
  // a VffnError made here keeps a thin binding: no JS wrapper has to convert what native code throws
  Napi::Function cls = error_class(env);
  if (!cls.IsEmpty()) {
    napi_value args[2] = {Napi::String::New(env, code), Napi::String::New(env, message)}, obj;
    if (napi_new_instance(env, cls, 2, args, &obj) == napi_ok) return Napi::Error(env, obj);
    // the constructor threw (the environment is going away): a plain error below
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
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
  // beyond 2^53 a double is no longer an exact integer, and beyond 2^63 the cast is undefined
  if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != double(int64_t(d))) {
    char got[32];
    std::snprintf(got, sizeof got, "%.17g", d);
    fail("ERR_ARGUMENT", std::string(name) + ": expected an integer within +-2^53, got " + got);
  }
  return int64_t(d);
}
int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail("ERR_ARGUMENT", std::string(what) + ": size overflows 64 bits");
  return r;
}
int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail("ERR_ARGUMENT", std::string(what) + ": size overflows 64 bits");
  return r;
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
  napi_env env = v.Env();
  double id;
  if (!handle_id(env, v, &id)) fail("ERR_ARGUMENT", std::string(name) + ": expected a Tensor");
  Handle* h = handles(env).find(id);
  if (!h) {
    if (Handles::well_formed(id)) fail("ERR_DISPOSED", std::string(name) + ": tensor has been disposed");
    fail("ERR_ARGUMENT", std::string(name) + ": expected a Tensor");
  }
  TensorArg t;
  t.storage = h->storage;
  t.device = h->storage->device;
  t.name = name;
  if (Recorder* r = recording()) record_arg(r, id, h->storage.get());
  if (h->viewed) {  // checked when the Tensor was made
    t.meta = h->meta;
    t.offset = h->offset;
    return t;
  }
  // a raw handle (alloc()) inside a hand-built tensor object: its fields, checked now
  if (!v.IsObject()) fail("ERR_ARGUMENT", std::string(name) + ": malformed Tensor (a handle without a view)");
  Napi::Object o = v.As<Napi::Object>();
  read_view(t, o.Get("_dt"), o.Get("offset"), o.Get("shape"), o.Get("strides"), name);
  return t;
}

void read_view(TensorArg& t, const Napi::Value& dtype, const Napi::Value& offset, const Napi::Value& shape,
               const Napi::Value& strides, const char* name) {
  t.offset = int_arg(offset, name);
  int64_t dt = int_arg(dtype, name);
  if (dt != F32 && dt != BF16 && dt != I32) fail("ERR_ARGUMENT", std::string(name) + ": malformed Tensor (dtype)");
  t.meta.dtype = int32_t(dt);
  if (!shape.IsArray() || !strides.IsArray()) fail("ERR_ARGUMENT", std::string(name) + ": malformed Tensor");
  Napi::Array sa = shape.As<Napi::Array>(), st = strides.As<Napi::Array>();
  if (sa.Length() > size_t(kMaxDims) || st.Length() != sa.Length())
    fail("ERR_SHAPE", std::string(name) + ": at most " + std::to_string(kMaxDims) + " dimensions are supported");
  t.meta.ndim = int32_t(sa.Length());
  // every size below is checked for overflow: shapes and strides come from JS objects anyone can build
  int64_t hi = 0, numel = 1;  // highest element offset touched, to check bounds against the storage
  bool empty = false;
  for (uint32_t i = 0; i < sa.Length(); i++) {
    t.meta.shape[i] = int_arg(sa.Get(i), name);
    t.meta.stride[i] = int_arg(st.Get(i), name);
    if (t.meta.shape[i] < 0 || t.meta.stride[i] < 0) fail("ERR_ARGUMENT", std::string(name) + ": malformed Tensor");
    if (t.meta.shape[i] == 0) empty = true;
  }
  for (int i = 0; !empty && i < t.meta.ndim; i++) {
    numel = checked_mul(numel, t.meta.shape[i], name);
    hi = checked_add(hi, checked_mul(t.meta.shape[i] - 1, t.meta.stride[i], name), name);
  }
  int64_t es = dtype_size(t.meta.dtype);
  if (numel > (int64_t(1) << 53)) fail("ERR_ARGUMENT", std::string(name) + ": more than 2^53 elements");
  if (t.offset < 0) fail("ERR_ARGUMENT", std::string(name) + ": view reaches outside its storage");
  if (!empty && checked_mul(checked_add(checked_add(t.offset, hi, name), 1, name), es, name) > int64_t(t.storage->bytes))
    fail("ERR_ARGUMENT", std::string(name) + ": view reaches outside its storage");
}

// ---- Io: what an op reads and writes ----

namespace {
Io::Entry entry_of(const TensorArg& t, bool whole_out) {
  Io::Entry e;
  e.storage = t.storage;
  e.name = t.name;
  e.meta = t.meta;
  e.offset = t.offset;
  int64_t es = dtype_size(t.meta.dtype), hi = 0;
  bool empty = false;
  for (int i = 0; i < t.meta.ndim; i++) {
    if (t.meta.shape[i] == 0) empty = true;
    else hi += (t.meta.shape[i] - 1) * t.meta.stride[i];  // bounded by tensor_arg
  }
  e.begin = t.offset * es;
  e.end = empty ? e.begin : (t.offset + hi + 1) * es;
  // a view that is dense over [begin, end) and spans the whole storage overwrites all of it
  e.whole = whole_out && !empty && t.meta.contiguous() && e.begin == 0 && e.end == int64_t(t.storage->bytes);
  return e;
}
bool same_view(const Io::Entry& a, const Io::Entry& b) {
  if (a.storage != b.storage || a.offset != b.offset || a.meta.ndim != b.meta.ndim || a.meta.dtype != b.meta.dtype) return false;
  for (int i = 0; i < a.meta.ndim; i++)
    if (a.meta.shape[i] != b.meta.shape[i] || (a.meta.shape[i] > 1 && a.meta.stride[i] != b.meta.stride[i])) return false;
  return true;
}
}  // namespace

Io& Io::in(const TensorArg& t) {
  if (t.storage) reads.push_back(entry_of(t, false));
  return *this;
}
Io& Io::out(const TensorArg& t) {
  if (t.storage) writes.push_back(entry_of(t, true)), write_is_out.push_back(true);
  return *this;
}
Io& Io::inout(const TensorArg& t) {
  if (t.storage) {
    reads.push_back(entry_of(t, false));
    writes.push_back(entry_of(t, false)), write_is_out.push_back(false);
  }
  return *this;
}

void Io::check_aliasing() const {
  for (const Entry& w : writes)
    for (const Entry& r : reads) {
      if (r.storage != w.storage || r.begin >= w.end || w.begin >= r.end) continue;
      if (same_view(r, w) && (same_view_ok_ || std::string(r.name) == w.name)) continue;  // in place, or allowed
      fail("ERR_ARGUMENT", std::string(w.name) + ": overlaps the memory of input '" + r.name +
                               "'; write into a separate tensor (outputs may not alias inputs)");
    }
}

FailurePtr first_failure(const StoragePtr* begin, const StoragePtr* end) {
  for (const StoragePtr* s = begin; s != end; s++)
    if (FailurePtr f = (*s)->failure()) return f;
  return nullptr;
}

void fill_plan(Planned& plan, Device* dev, const char* op, const Io& io) {
  io.check_aliasing();
  plan.dev = dev;
  plan.op = op;
  for (auto& r : io.reads) plan.reads.push_back(r.storage);
  for (size_t i = 0; i < io.writes.size(); i++) {
    plan.clears.push_back(io.write_is_out[i] && io.writes[i].whole);
    plan.writes.push_back(io.writes[i].storage);
  }
  plan.gate = io.gate_;
}

void enqueue_plan(std::shared_ptr<Planned> plan) {
  Device* dev = plan->dev;
  std::string why;
  if (dev->stream.fatal(&why)) fail("ERR_DEVICE", dev->name() + " has failed and cannot run '" + plan->op + "': " + why);
  if (Recorder* r = recording()) return record_op(r, std::move(plan));
  const char* op = plan->op;
  dev->stream.enqueue(op, std::shared_ptr<Runnable>(std::move(plan)));
}

void Planned::run() {
  FailurePtr f = first_failure(reads);
  if (f && gate) return;  // nothing changes, nothing is marked
  if (!f) {
    std::string code, message;
    try {
      call();
    } catch (const InputFailed& e) {
      f = e.failure;
    } catch (const Error& e) {
      code = e.code, message = e.message;
    } catch (const std::bad_alloc&) {
      code = "ERR_OOM", message = "out of memory";
    } catch (const std::exception& e) {
      code = "ERR_INTERNAL", message = e.what();
    } catch (...) {
      code = "ERR_INTERNAL", message = "unknown failure";
    }
    if (!code.empty()) f = std::make_shared<Failure>(Failure{op, code, message});
    if (!code.empty() && code == "ERR_CUDA" && dev->type == kCUDA) {
      // a sticky CUDA error (illegal address, ...) leaves the context unusable: poison the device
      if (cuda_api()->synchronize(dev->index) != VFFN_OK) dev->stream.set_fatal("'" + std::string(op) + "' failed: " + message);
    }
  }
  for (size_t i = 0; i < writes.size(); i++) {
    if (f) writes[i]->set_failure(f);
    else if (clears[i]) writes[i]->set_failure(nullptr);
    writes[i]->version.fetch_add(1, std::memory_order_relaxed);
  }
}

void cuda_call(Device* dev, const char* op, const void* args) {
  using Fn = int (*)(int, const void*);
  auto fn = reinterpret_cast<Fn>(cuda_symbol(op));
  cuda_check(fn(dev->index, args), op);
}

}  // namespace vffn::napi
