// the JS side's references to storages. a lib/ Tensor holds an id (a plain number) naming one
// slot of its environment's table; the slot holds one reference to the storage and the tensor's
// view, checked once when the slot was made. ops look the id up instead of unwrapping a JS object,
// and a Tensor costs no native object: dispose() or a FinalizationRegistry releases its slot.
// an id is (generation << kIndexBits | index): a released slot's next id differs from every
// earlier one, so a stale id finds nothing. the table lives and dies with its environment (a
// worker thread that ends drops every slot it still held).
#pragma once
#include <cstdlib>
#include <memory>

#include "common.h"

namespace vffn::napi {

struct Handle {
  StoragePtr storage;   // null once released
  bool viewed = false;  // offset and meta are set (raw handles of alloc() have no view)
  int64_t offset = 0;
  View meta;
  uint32_t gen = 1;
};

class Handles {
 public:
  static constexpr int kIndexBits = 26;
  // a new slot holding s, with `view` (at `offset` elements) when given, else raw; ERR_OOM when
  // 2^26 slots are live
  double add(StoragePtr s, const View* view = nullptr, int64_t offset = 0);
  // the live slot `id` names, else null
  Handle* find(double id);
  // drops the slot's reference; false when id names no live slot
  bool release(double id);
  // whether id has the form of an id (so a failed find means "disposed", not "not a tensor")
  static bool well_formed(double id);
  // counts the slots this thread has released: while it stands still, no tensor a recorded step
  // checked has been disposed or collected since
  static uint64_t& released();
  size_t live() const { return slots_.size() - free_.size(); }

 private:
  std::vector<Handle> slots_;
  std::vector<uint32_t> free_;
};

// lib/'s error class of this environment (setErrorClass), or an empty function before it is set
Napi::Function error_class(napi_env env);

// this environment's table (JS thread only)
Handles& handles(napi_env env);

// the id argument `v` stands for: a number, or a lib/ Tensor object (its _id); false when neither
bool handle_id(napi_env env, const Napi::Value& v, double* id);

// host memory a wait fills on a worker and hands to JS on the JS thread (as an external
// ArrayBuffer): the worker never touches JS-owned memory, which may be gone with its thread.
struct HostBuffer {
  void* data = nullptr;
  size_t bytes = 0;
  HostBuffer() = default;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { std::free(data); }
  // null when the memory cannot be had (the caller reports ERR_OOM)
  static std::shared_ptr<HostBuffer> make(size_t bytes);
};

// wraps the buffer's memory as an ArrayBuffer without copying; JS owns it from then on
Napi::ArrayBuffer adopt(Napi::Env env, std::shared_ptr<HostBuffer> buf);

// runs on the JS thread to build the promise's value from native data only
using Resolve = std::function<Napi::Value(Napi::Env)>;

// a promise settled once `dev`'s worker reaches this point of its stream. it rejects exactly when
// one of `reads` carries a failure (with that failure's op, code and message), when `work` (run on
// the worker first, e.g. a copy into a HostBuffer) throws, or when the device has failed for good.
// nothing here holds a JS value off the JS thread: a worker thread may end while this is pending.
Napi::Promise wait_promise(Napi::Env env, Device* dev, std::vector<StoragePtr> reads, std::function<void()> work,
                           Resolve resolve);

// a promise rejected at once with (code, message)
Napi::Promise rejected(Napi::Env env, const std::string& code, const std::string& message);

}  // namespace vffn::napi
