// tensor lifecycle and data movement: alloc, write, read, sync, copy between devices, fill,
// randn; device facts: memory, CUDA availability, CPU threads.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <chrono>
#include <thread>
#include <memory>
#include <vector>

#include "../core/dtype.h"
#include "../core/ops.h"
#include "../core/philox.h"
#include "../cpu/gemm.h"
#include "../cpu/pool.h"
#include "../cpu/tensor_ops.h"
#include "common.h"
#include "storage.h"

namespace vffn::napi {

namespace {

// deferAlloc(on): CPU tensors created on this JS thread from now on take their memory when the
// first op runs on them (see Storage); returns the previous setting
thread_local bool t_defer = false;

Napi::Value DeferAlloc(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    bool prev = t_defer;
    t_defer = bool_arg(info[0], "on");
    return Napi::Boolean::New(info.Env(), prev);
  });
}

StoragePtr new_storage(Device* dev, size_t bytes) {
  StoragePtr s;
  try {
    s = std::make_shared<Storage>(dev, bytes, t_defer);
  } catch (const std::bad_alloc&) {
    fail("ERR_OOM", "out of memory: could not allocate " + std::to_string(bytes) + " bytes on " + dev->name());
  }
  if (Recorder* r = recording()) record_alloc(r, s);
  return s;
}

// alloc(deviceType, deviceIndex, bytes) -> id: a raw handle without a view (tests build tensor
// objects around one; see tensor_arg)
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Device* dev = device_arg(info[0], info[1]);
    double bytes = num_arg(info[2], "bytes");
    if (bytes < 0 || bytes > 9.0e15) fail("ERR_ARGUMENT", "bytes: out of range");
    return Napi::Number::New(info.Env(), handles(info.Env()).add(new_storage(dev, size_t(bytes))));
  });
}

// empty(deviceType, deviceIndex, dtype, shape) -> id: new memory with a contiguous view, the
// whole of a new Tensor's native side in one call
Napi::Value Empty(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Device* dev = device_arg(info[0], info[1]);
    int64_t dt = int_arg(info[2], "dtype");
    if (dt != F32 && dt != BF16 && dt != I32) fail("ERR_ARGUMENT", "dtype: unknown dtype code");
    if (!info[3].IsArray()) fail("ERR_ARGUMENT", "shape: expected an array");
    Napi::Array sa = info[3].As<Napi::Array>();
    if (sa.Length() > size_t(kMaxDims)) fail("ERR_SHAPE", "shape: at most " + std::to_string(kMaxDims) + " dimensions are supported");
    View meta;
    meta.dtype = int32_t(dt);
    meta.ndim = int32_t(sa.Length());
    int64_t numel = 1;
    for (uint32_t i = 0; i < sa.Length(); i++) {
      meta.shape[i] = int_arg(sa.Get(i), "shape");
      if (meta.shape[i] < 0) fail("ERR_ARGUMENT", "shape: sizes must be non-negative");
    }
    for (int i = meta.ndim - 1; i >= 0; i--) {
      meta.stride[i] = numel;
      numel = checked_mul(numel, meta.shape[i], "shape");
    }
    if (numel > (int64_t(1) << 50)) fail("ERR_SHAPE", "shape: more than 2^50 elements");
    int64_t bytes = checked_mul(numel, dtype_size(meta.dtype), "shape");
    return Napi::Number::New(info.Env(), handles(info.Env()).add(new_storage(dev, size_t(bytes)), &meta));
  });
}

// view(id, dtype, offset, shape, strides) -> id: a new handle on the same memory with the given
// view, checked against the memory once (every check of a tensor argument's slow path)
Napi::Value ViewOf(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg t = tensor_arg(info[0], "tensor");
    read_view(t, info[1], info[2], info[3], info[4], "tensor");
    return Napi::Number::New(info.Env(), handles(info.Env()).add(t.storage, &t.meta, t.offset));
  });
}

// release(id) -> whether it named a live handle; the memory lives on while another handle or a
// queued op holds it
Napi::Value Release(const Napi::CallbackInfo& info) {
  double id;
  bool ok = napi_get_value_double(info.Env(), info[0], &id) == napi_ok && handles(info.Env()).release(id);
  return Napi::Boolean::New(info.Env(), ok);
}

// handles() -> the number of live handles of this thread (tests: nothing leaks)
Napi::Value LiveHandles(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(handles(info.Env()).live()));
}

// write(tensor, typedArray): host data into a contiguous tensor, in stream order. the source is
// copied at once, so the caller may reuse its array as soon as this returns.
Napi::Value Write(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg t = tensor_arg(info[0], "tensor");
    if (!info[1].IsTypedArray()) fail("ERR_ARGUMENT", "data: expected a typed array");
    Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
    if (!t.meta.contiguous()) fail("ERR_ARGUMENT", "tensor: write needs a contiguous tensor");
    size_t bytes = size_t(checked_mul(t.numel(), dtype_size(t.meta.dtype), "tensor"));
    if (ta.ByteLength() != bytes)
      fail("ERR_SHAPE", "data: expected " + std::to_string(bytes) + " bytes, got " + std::to_string(ta.ByteLength()));
    auto host = std::make_shared<std::vector<uint8_t>>(bytes);
    std::memcpy(host->data(), static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), bytes);
    Device* dev = t.device;
    enqueue(dev, "write", Io().out(t), [t, host, dev, bytes] {
      void* dst = t.view().data;
      if (dev->type == kCPU)
        std::memcpy(dst, host->data(), bytes);
      else
        cuda_check(cuda_api()->memcpy_h2d(dev->index, dst, host->data(), bytes), "write");
    });
    return info.Env().Undefined();
  });
}

// read(tensor) -> Promise<Float32Array | Int32Array | Uint16Array(raw=true, bf16)>. the values land
// in native memory on the worker and become the array's memory on the JS thread, so a worker
// thread that ends meanwhile leaves nothing to write into, and a failed allocation is ERR_OOM.
Napi::Value Read(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    TensorArg t = tensor_arg(info[0], "tensor");
    bool raw = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    int32_t out_dt = t.meta.dtype == I32 ? I32 : (raw ? t.meta.dtype : F32);
    size_t n = size_t(t.numel());
    size_t bytes = size_t(checked_mul(int64_t(n), dtype_size(out_dt), "tensor"));
    std::shared_ptr<HostBuffer> buf = HostBuffer::make(bytes);
    if (!buf)
      return rejected(env, "ERR_OOM", "tensor: out of memory: could not allocate " + std::to_string(bytes) + " bytes of host memory to read it into");
    Device* dev = t.device;
    // the worker holds the buffer too: the pending wait (and its env) may be gone before it runs
    auto work = [t, buf, out_dt, n, dev] {
      void* out = buf->data;
      View dst;
      dst.data = out;
      dst.dtype = out_dt;
      dst.ndim = t.meta.ndim;
      int64_t s = 1;
      for (int i = t.meta.ndim - 1; i >= 0; i--) {
        dst.shape[i] = t.meta.shape[i];
        dst.stride[i] = s;
        s *= t.meta.shape[i];
      }
      if (n == 0) return;
      if (dev->type == kCPU) return cpu::copy(dst, t.view());
      // CUDA: gather the view into a contiguous device buffer of the output dtype, then download
      View src = t.view();
      if (src.contiguous() && src.dtype == out_dt) {
        cuda_check(cuda_api()->memcpy_d2h(dev->index, out, src.data, n * size_t(dtype_size(out_dt))), "read");
        return;
      }
      Storage tmp(dev, n * size_t(dtype_size(out_dt)));
      View dev_dst = dst;
      dev_dst.data = tmp.data();
      CopyArgs a{dev_dst, src};
      cuda_call(dev, "copy", &a);
      cuda_check(cuda_api()->memcpy_d2h(dev->index, out, dev_dst.data, n * size_t(dtype_size(out_dt))), "read");
    };
    return wait_promise(env, dev, {t.storage}, work, [buf, out_dt, n](Napi::Env env) -> Napi::Value {
      Napi::ArrayBuffer ab = adopt(env, buf);
      if (out_dt == I32) return Napi::Int32Array::New(env, n, ab, 0);
      if (out_dt == BF16) return Napi::Uint16Array::New(env, n, ab, 0);
      return Napi::Float32Array::New(env, n, ab, 0);
    });
  });
}

// failed(tensor) -> Promise<null | {op, code, message}>: whether the tensor's values are valid,
// without reading them (trainStep's status uses it)
Napi::Value Failed(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg t = tensor_arg(info[0], "tensor");
    auto seen = std::make_shared<FailurePtr>();
    StoragePtr s = t.storage;
    return wait_promise(info.Env(), t.device, {}, [seen, s] { *seen = s->failure(); }, [seen](Napi::Env env) -> Napi::Value {
      if (!*seen) return env.Null();
      Napi::Object o = Napi::Object::New(env);
      o.Set("op", (*seen)->op);
      o.Set("code", (*seen)->code);
      o.Set("message", "op '" + (*seen)->op + "' failed: " + (*seen)->message);
      return o;
    });
  });
}

Napi::Value Sync(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Device* dev = device_arg(info[0], info[1]);
    std::function<void()> work;
    if (dev->type == kCUDA) work = [dev] { cuda_check(cuda_api()->synchronize(dev->index), "sync"); };
    return wait_promise(info.Env(), dev, {}, work, nullptr);
  });
}

// copy(dst, src): same shape, any strides and dtypes. across devices the source's stream is
// drained into a host staging buffer first; the destination's worker waits for it.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg dst = tensor_arg(info[0], "dst"), src = tensor_arg(info[1], "src");
    if (dst.numel() != src.numel()) fail("ERR_SHAPE", "src: size differs from dst");
    if ((dst.meta.dtype == I32) != (src.meta.dtype == I32)) fail("ERR_DTYPE", "src: int32 converts only to int32");
    if (dst.device == src.device) {
      Device* dev = dst.device;
      enqueue(dev, "copy", Io().out(dst).in(src).same_view_ok(), [dst, src, dev] {
        if (dev->type == kCPU) return cpu::copy(dst.view(), src.view());
        CopyArgs a{dst.view(), src.view()};
        cuda_call(dev, "copy", &a);
      });
      return info.Env().Undefined();
    }
    // stage 1 on the source stream: a contiguous host copy in the source dtype
    size_t n = size_t(src.numel());
    int32_t sdt = src.meta.dtype;
    auto host = std::make_shared<std::vector<uint8_t>>(size_t(checked_mul(int64_t(n), dtype_size(sdt), "src")) + 1);
    // stage 1 hands the source's failure (if any) to stage 2 with the bytes
    auto staged_failure = std::make_shared<FailurePtr>();
    View hv;
    hv.data = host->data();
    hv.dtype = sdt;
    hv.ndim = dst.meta.ndim;
    int64_t s = 1;
    for (int i = hv.ndim - 1; i >= 0; i--) {
      hv.shape[i] = dst.meta.shape[i];
      hv.stride[i] = s;
      s *= dst.meta.shape[i];
    }
    Device* sd = src.device;
    Device* dd = dst.device;
    StoragePtr src_storage = src.storage;
    auto stage1 = [src, hv, sd, n] {
      View sv = src.view();
      if (sd->type == kCPU) {
        if (sv.contiguous()) {
          std::memcpy(hv.data, sv.data, n * size_t(dtype_size(sv.dtype)));
          return;
        }
        // same element order: copy through the source's own shape
        View flat_dst = hv;
        flat_dst.ndim = sv.ndim;
        int64_t st = 1;
        for (int i = sv.ndim - 1; i >= 0; i--) {
          flat_dst.shape[i] = sv.shape[i];
          flat_dst.stride[i] = st;
          st *= sv.shape[i];
        }
        return cpu::copy(flat_dst, sv);
      }
      if (!sv.contiguous()) fail("ERR_ARGUMENT", "src: copy of a strided CUDA view to another device: call contiguous() first");
      cuda_check(cuda_api()->memcpy_d2h(sd->index, hv.data, sv.data, n * size_t(dtype_size(sv.dtype))), "copy");
    };
    not_recording("a copy between devices");
    std::string why;
    if (sd->stream.fatal(&why)) fail("ERR_DEVICE", sd->name() + " has failed and cannot run 'copy': " + why);
    uint64_t ready = sd->stream.enqueue("copy", [stage1, host, src_storage, staged_failure] {
      if ((*staged_failure = src_storage->failure())) return;
      try {
        stage1();
      } catch (const Error& e) {
        *staged_failure = std::make_shared<Failure>(Failure{"copy", e.code, e.message});
      } catch (const std::exception& e) {
        *staged_failure = std::make_shared<Failure>(Failure{"copy", "ERR_INTERNAL", e.what()});
      }
    });
    enqueue(dd, "copy", Io().out(dst), [dst, host, hv, sd, dd, ready, n, staged_failure] {
      sd->stream.wait(ready);
      if (*staged_failure) throw InputFailed{*staged_failure};
      View dv = dst.view();
      if (dd->type == kCPU) return cpu::copy(dv, hv);
      if (dv.contiguous() && dv.dtype == hv.dtype) {
        cuda_check(cuda_api()->memcpy_h2d(dd->index, dv.data, hv.data, n * size_t(dtype_size(hv.dtype))), "copy");
        return;
      }
      Storage tmp(dd, n * size_t(dtype_size(hv.dtype)));
      View staged = hv;
      staged.data = tmp.data();
      cuda_check(cuda_api()->memcpy_h2d(dd->index, staged.data, hv.data, n * size_t(dtype_size(hv.dtype))), "copy");
      CopyArgs a{dv, staged};
      cuda_call(dd, "copy", &a);
    });
    return info.Env().Undefined();
  });
}

Napi::Value Fill(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg t = tensor_arg(info[0], "tensor");
    double v = num_arg(info[1], "value");
    Device* dev = t.device;
    enqueue(dev, "fill", Io().out(t), [t, v, dev] {
      if (dev->type == kCPU) return cpu::fill(t.view(), v);
      FillArgs a{t.view(), v};
      cuda_call(dev, "fill", &a);
    });
    return info.Env().Undefined();
  });
}

// randn(tensor, seedLo, seedHi, mean, std, truncate): drawn on CPU so every device gets the
// same numbers for the same seed, then copied where the tensor lives.
Napi::Value Randn(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg t = tensor_arg(info[0], "tensor");
    uint64_t seed = uint64_t(uint32_t(int_arg(info[1], "seed"))) | (uint64_t(uint32_t(int_arg(info[2], "seed"))) << 32);
    double mean = num_arg(info[3], "mean"), sd = num_arg(info[4], "std"), trunc = num_arg(info[5], "truncate");
    if (t.device->type != kCPU) fail("ERR_DEVICE", "tensor: randn draws on cpu; create there and move with to()");
    enqueue(t.device, "randn", Io().out(t), [t, seed, mean, sd, trunc] { cpu::randn(t.view(), seed, mean, sd, trunc); });
    return info.Env().Undefined();
  });
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Device* dev = device_arg(info[0], info[1]);
    Napi::Object o = Napi::Object::New(info.Env());
    // memory(type, index, resetPeak): the peak is read (and reset when asked) after live
    const bool reset = info.Length() > 2 && bool_arg(info[2], "resetPeak");
    size_t live = size_t(dev->live_bytes.load()), cached = 0, peak = 0;
    if (dev->type == kCUDA) {
      cuda_check(cuda_api()->memory(dev->index, &live, &cached), "memory");
      cuda_check(cuda_api()->memory_peak(dev->index, &peak, reset ? 1 : 0), "memory");
    } else {
      if (reset) dev->reset_peak();
      peak = size_t(dev->peak_bytes.load());
    }
    o.Set("live", double(live));
    o.Set("cached", double(cached));
    o.Set("peak", double(std::max(peak, live)));
    return o;
  });
}

Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string reason;
  const vffn_cuda_api* api = cuda_api(&reason);
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", api != nullptr);
  o.Set("reason", api ? std::string() : reason);
  o.Set("count", cuda_device_count());
  return o;
}

// the count asked for last; the pool itself is resized on the CPU stream, between ops
std::atomic<int> requested_threads{0};

Napi::Value Threads(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      int64_t n = int_arg(info[0], "threads");
      not_recording("setting the thread count");
      if (n < 0 || n > 256) fail("ERR_ARGUMENT", "threads: expected 0..256 (0 = all cores), got " + std::to_string(n));
      int effective = n ? int(n) : std::max(1, int(std::thread::hardware_concurrency()));
      requested_threads = effective;
      cpu_device()->stream.enqueue("threads", [effective] { cpu::set_threads(effective); });
      return Napi::Number::New(info.Env(), effective);
    }
    int r = requested_threads.load();
    return Napi::Number::New(info.Env(), r ? r : cpu::threads());
  });
}

// the pool reads it atomically at each op, so it is set from the JS thread directly
Napi::Value SpinWait(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      int64_t us = int_arg(info[0], "microseconds");
      if (us < 0 || us > cpu::kMaxSpinUs)
        fail("ERR_ARGUMENT", "microseconds: expected 0.." + std::to_string(cpu::kMaxSpinUs) + ", got " + std::to_string(us));
      cpu::set_spin_us(int(us));
    }
    return Napi::Number::New(info.Env(), cpu::spin_us());
  });
}

Napi::Value Philox(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    uint32_t c[4];
    for (int i = 0; i < 4; i++) c[i] = uint32_t(int_arg(info[i], "counter"));
    uint64_t seed = uint64_t(uint32_t(int_arg(info[4], "seed"))) | (uint64_t(uint32_t(int_arg(info[5], "seed"))) << 32);
    U32x4 r = philox4x32_10(c[0], c[1], c[2], c[3], seed);
    Napi::Array a = Napi::Array::New(info.Env(), 4);
    for (uint32_t i = 0; i < 4; i++) a.Set(i, double(r.v[i]));
    return a;
  });
}

Napi::Value KernelInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("gemm", cpu::gemm_kernel_name());
  o.Set("gemmSmall", cpu::gemm_small_kernel_name());
  return o;
}

// _debugFail(tensor, message): queues an op that writes `tensor` and fails, to test error propagation
Napi::Value DebugFail(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg t = tensor_arg(info[0], "tensor");
    std::string msg = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "forced failure";
    enqueue(t.device, "debug_fail", Io().out(t), [msg] { fail("ERR_INTERNAL", msg); });
    return info.Env().Undefined();
  });
}

// _debugSleep(deviceType, index, ms): keeps the device's worker busy, to test teardown under load
Napi::Value DebugSleep(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Device* dev = device_arg(info[0], info[1]);
    int64_t ms = int_arg(info[2], "ms");
    if (ms < 0 || ms > 10000) fail("ERR_ARGUMENT", "ms: expected 0..10000");
    enqueue(dev, "debug_sleep", Io(), [ms] { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
    return info.Env().Undefined();
  });
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("_debugFail", Napi::Function::New(env, DebugFail));
  exports.Set("_debugSleep", Napi::Function::New(env, DebugSleep));
  exports.Set("failed", Napi::Function::New(env, Failed));
  exports.Set("alloc", Napi::Function::New(env, Alloc));
  exports.Set("empty", Napi::Function::New(env, Empty));
  exports.Set("view", Napi::Function::New(env, ViewOf));
  exports.Set("release", Napi::Function::New(env, Release));
  exports.Set("liveHandles", Napi::Function::New(env, LiveHandles));
  exports.Set("write", Napi::Function::New(env, Write));
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("sync", Napi::Function::New(env, Sync));
  exports.Set("copy", Napi::Function::New(env, Copy));
  exports.Set("fill", Napi::Function::New(env, Fill));
  exports.Set("randn", Napi::Function::New(env, Randn));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("deferAlloc", Napi::Function::New(env, DeferAlloc));
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfo));
  exports.Set("threads", Napi::Function::New(env, Threads));
  exports.Set("spinWait", Napi::Function::New(env, SpinWait));
  exports.Set("philox", Napi::Function::New(env, Philox));
  exports.Set("kernelInfo", Napi::Function::New(env, KernelInfo));
}
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
