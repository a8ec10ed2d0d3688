// a recorded step: the ops a JS function queues, kept with their plans and run again by one
// native call. graphRecord(fn) runs fn with this thread's enqueue() appending to a list instead
// of the stream; graphReplay(g, inputs, data) queues the whole list as one stream task (after
// writing new host data into the recording's input tensors), each op with its own
// plan (errors belong to tensors exactly as when queued one by one). the ops hold their storages,
// so nothing a recorded op touches can be freed under it; a replay refuses (ERR_DISPOSED) when a
// tensor it reads from outside was disposed in JS since.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../cpu/gemm.h"
#include "../cpu/pool.h"
#include "common.h"
#include "storage.h"

namespace vffn::napi {

namespace {

// a weight a recorded CPU step multiplies by with more than 8 rows, packed whole for the GEMM's
// packed path (cpu::pack_b_all) the first time a replay needs it and again when the weight's
// storage has been written since (its version moved). shared by every recording that uses it,
// freed with the last; its memory is a tensor's (device memory() counts it).
struct PackedWeight {
  StoragePtr weight;
  int64_t offset, N, K, ld;  // where op(B) starts in the storage (bytes), its shape and stride
  int32_t dtype;
  StoragePtr buf;
  int64_t npad;
  uint64_t version = kNever;  // the weight's version buf was packed from
  static constexpr uint64_t kNever = ~uint64_t(0);
};

// what the worker runs: the ops, and the storages made while recording (a replay recomputes
// them, so it clears their failures first: a replay never inherits the last one's errors)
struct Recording {
  Device* dev = nullptr;
  std::vector<std::shared_ptr<Planned>> ops;
  std::vector<StoragePtr> owned;
  std::vector<std::shared_ptr<PackedWeight>> packed;  // on the worker only
  std::atomic<int64_t> packed_bytes{0};  // of those, for graphInfo
};

// the replay running on this worker and its op now, for the GEMM's packed-weight lookups
thread_local Recording* t_replay = nullptr;
thread_local const Planned* t_op = nullptr;
// every packed weight alive, to share one between recordings (the CPU worker's only)
std::vector<std::weak_ptr<PackedWeight>>& all_packed() {
  static auto* v = new std::vector<std::weak_ptr<PackedWeight>>();
  return *v;
}

// the most bytes of packed weights alive at once (VFFN_PACK_KIB, read once; default 64 MiB). the
// gain is in reading cached weights without repacking them; a model far larger than the caches
// (354M: 1.35 GB) is bound by memory either way, and packing it all would double its memory and
// stall the first replay for seconds (page faults), so past the limit weights are packed per call
int64_t pack_limit_bytes() {
  static const int64_t n = [] {
    const char* e = std::getenv("VFFN_PACK_KIB");
    const long long kib = e && *e ? std::strtoll(e, nullptr, 10) : 64 * 1024;
    return int64_t(std::max<long long>(kib, 0)) * 1024;
  }();
  return n;
}

// cpu::PackedBSource for the ops of a replay: op(B) must lie in a storage the op reads and does
// not write (a weight, not an activation of this step)
cpu::PackedB replay_packed_b(const cpu::Mat& B, int64_t N, int64_t K) {
  Recording* rec = t_replay;
  const Planned* op = t_op;
  if (!rec || !op) return {};
  const char* d = static_cast<const char*>(B.data);
  for (const StoragePtr& s : op->reads) {
    const char* base = static_cast<const char*>(s->data_if_taken());
    if (!base || d < base || d >= base + s->bytes) continue;
    for (const StoragePtr& w : op->writes)
      if (w == s) return {};
    const int64_t off = d - base;
    auto same = [&](const PackedWeight& p) { return p.weight == s && p.offset == off && p.N == N && p.K == K && p.ld == B.ld && p.dtype == B.dtype; };
    std::shared_ptr<PackedWeight> hit;
    for (auto& p : rec->packed)
      if (same(*p)) hit = p;
    if (!hit) {
      auto& all = all_packed();
      all.erase(std::remove_if(all.begin(), all.end(), [](const std::weak_ptr<PackedWeight>& w) { return w.expired(); }), all.end());
      for (auto& w : all)
        if (auto p = w.lock(); p && same(*p)) hit = p;
      if (!hit) {
        const int64_t floats = cpu::packed_b_floats(N, K);
        int64_t live = floats * int64_t(sizeof(float));
        for (auto& w : all)
          if (auto p = w.lock()) live += int64_t(p->buf->bytes);
        if (live > pack_limit_bytes()) return {};
        hit = std::make_shared<PackedWeight>(PackedWeight{s, off, N, K, B.ld, B.dtype, std::make_shared<Storage>(s->device, size_t(floats) * sizeof(float)), floats / K});
        all.push_back(hit);
      }
      rec->packed.push_back(hit);
      rec->packed_bytes += int64_t(hit->buf->bytes);
    }
    if (hit->version != s->version.load()) {
      cpu::pack_b_all(N, K, B, static_cast<float*>(hit->buf->data()));
      hit->version = s->version.load();
    }
    return {static_cast<const float*>(hit->buf->data()), hit->npad};
  }
  return {};
}

// runs a replay's ops with replay_packed_b as the GEMM's source of packed weights
void run_ops(Recording* rec) {
  const bool cpu_dev = rec->dev && rec->dev->type == kCPU;
  if (cpu_dev) t_replay = rec, cpu::set_packed_b_source(replay_packed_b);
  struct Reset {
    bool on;
    ~Reset() {
      if (!on) return;
      t_replay = nullptr, t_op = nullptr;
      cpu::set_packed_b_source(nullptr);
    }
  } reset{cpu_dev};
  for (auto& p : rec->ops) {
    t_op = p.get();
    p->run();
  }
}

}  // namespace

// the JS thread's side: the recording, and the handle ids of every outside tensor it reads
// (touched on the JS thread only, so it never travels with a replay)
struct Recorder {
  std::shared_ptr<Recording> rec = std::make_shared<Recording>();
  std::unordered_set<Storage*> owned;
  std::unordered_set<double> seen;
  std::unordered_map<Storage*, std::vector<double>> outside;
  bool released = false;
  // Handles::released() when every outside handle was last found alive (a replay checks them
  // again only after some handle was released or collected)
  uint64_t checked = ~uint64_t(0);
};

namespace {
thread_local Recorder* t_recorder = nullptr;
}

Recorder* recording() { return t_recorder; }

void record_op(Recorder* r, std::shared_ptr<Planned> p) {
  if (!r->rec->dev) r->rec->dev = p->dev;
  if (r->rec->dev != p->dev) fail("ERR_DEVICE", std::string(p->op) + ": a recorded step runs on one device");
  r->rec->ops.push_back(std::move(p));
}

void record_alloc(Recorder* r, const StoragePtr& s) {
  r->owned.insert(s.get());
  r->rec->owned.push_back(s);
}

void record_arg(Recorder* r, double id, Storage* s) {
  if (r->owned.count(s) || !r->seen.insert(id).second) return;
  r->outside[s].push_back(id);
}

void not_recording(const char* what) {
  if (t_recorder) fail("ERR_ARGUMENT", std::string(what) + " cannot be part of a recorded step");
}

namespace {

// whether one of the ids still names a live handle
bool any_alive(Handles& hs, const std::vector<double>& ids) {
  for (double id : ids)
    if (hs.find(id)) return true;
  return false;
}

Recorder* graph_arg(const Napi::Value& v) {
  if (!v.IsExternal()) fail("ERR_ARGUMENT", "graph: expected a recorded step");
  Recorder* r = v.As<Napi::External<Recorder>>().Data();
  if (r->released) fail("ERR_DISPOSED", "graph: the recorded step has been released");
  return r;
}

// graphRecord(fn) -> graph: runs fn, recording the ops it queues instead of running them
Napi::Value GraphRecord(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (!info[0].IsFunction()) fail("ERR_ARGUMENT", "fn: expected a function");
    if (t_recorder) fail("ERR_ARGUMENT", "fn: a step is already being recorded on this thread");
    auto r = std::make_unique<Recorder>();
    t_recorder = r.get();
    try {
      info[0].As<Napi::Function>().Call({});
    } catch (...) {
      t_recorder = nullptr;
      throw;
    }
    t_recorder = nullptr;
    // an outside storage whose recorded handles are all gone is the recording's own now
    Handles& hs = handles(info.Env());
    for (auto it = r->outside.begin(); it != r->outside.end();) it = any_alive(hs, it->second) ? std::next(it) : r->outside.erase(it);
    r->seen.clear();
    r->owned.clear();
    return Napi::External<Recorder>::New(info.Env(), r.release(), [](Napi::Env, Recorder* p) { delete p; });
  });
}

// host data for one input of a replay: copied now, written by the replay's task before its ops
// (as write() would: a success makes the whole tensor valid again)
std::shared_ptr<Planned> input_write(const Napi::Value& tv, const Napi::Value& dv, Device*& dev) {
  TensorArg t = tensor_arg(tv, "inputs");
  need(dev == nullptr || t.device == dev, "ERR_DEVICE", "inputs: expected tensors on the recording's device");
  dev = t.device;
  need(t.meta.contiguous(), "ERR_ARGUMENT", "inputs: expected contiguous tensors");
  need(dv.IsTypedArray(), "ERR_ARGUMENT", "data: expected typed arrays");
  Napi::TypedArray ta = dv.As<Napi::TypedArray>();
  size_t bytes = size_t(checked_mul(t.numel(), dtype_size(t.meta.dtype), "inputs"));
  need(ta.ByteLength() == bytes, "ERR_SHAPE", "data: expected " + std::to_string(bytes) + " bytes, got " + std::to_string(ta.ByteLength()));
  auto host = std::make_shared<std::vector<uint8_t>>(bytes);
  std::memcpy(host->data(), static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), bytes);
  Device* d = dev;
  return plan_of(d, "write", Io().out(t), [t, host, d, bytes] {
    void* dst = t.view().data;
    if (d->type == kCPU)
      std::memcpy(dst, host->data(), bytes);
    else
      cuda_check(cuda_api()->memcpy_h2d(d->index, dst, host->data(), bytes), "write");
  });
}

// graphReplay(graph, inputs?, data?): writes data[i] into inputs[i], then runs every recorded op,
// in order: all of it one stream task (checked whole first: a bad argument queues nothing)
Napi::Value GraphReplay(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Recorder* r = graph_arg(info[0]);
    not_recording("graphReplay");
    if (r->checked != Handles::released()) {
      Handles& hs = handles(info.Env());
      for (auto& [s, ids] : r->outside)
        need(any_alive(hs, ids), "ERR_DISPOSED", "graph: a tensor the recorded step reads has been disposed; record the step again");
      r->checked = Handles::released();
    }
    std::shared_ptr<Recording> rec = r->rec;
    Device* dev = rec->dev;
    std::vector<std::shared_ptr<Planned>> pre;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      need(info[1].IsArray() && info[2].IsArray(), "ERR_ARGUMENT", "inputs: expected an array of tensors and one of typed arrays");
      Napi::Array ts = info[1].As<Napi::Array>(), ds = info[2].As<Napi::Array>();
      need(ts.Length() == ds.Length(), "ERR_ARGUMENT", "data: expected one typed array per input");
      for (uint32_t i = 0; i < ts.Length(); i++) pre.push_back(input_write(ts.Get(i), ds.Get(i), dev));
    }
    if (!dev) return info.Env().Undefined();
    std::string why;
    if (dev->stream.fatal(&why)) fail("ERR_DEVICE", dev->name() + " has failed and cannot replay a step: " + why);
    // the step's ops follow one another closely: have the pool's threads polling when it starts
    if (dev->type == kCPU) cpu::wake_threads();
    dev->stream.enqueue("graph", [rec, pre = std::move(pre)] {
      for (auto& p : pre) p->run();
      for (auto& s : rec->owned) s->set_failure(nullptr);
      run_ops(rec.get());
    });
    return info.Env().Undefined();
  });
}

// graphRelease(graph): drops the ops and what they hold (a pending replay keeps its own reference)
Napi::Value GraphRelease(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (!info[0].IsExternal()) fail("ERR_ARGUMENT", "graph: expected a recorded step");
    Recorder* r = info[0].As<Napi::External<Recorder>>().Data();
    r->released = true;
    r->rec.reset();
    r->outside.clear();
    return info.Env().Undefined();
  });
}

// graphInfo(graph) -> { ops, owned } (what a replay runs, for tests and benchmarks)
Napi::Value GraphInfo(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Recorder* r = graph_arg(info[0]);
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("ops", Napi::Number::New(info.Env(), double(r->rec->ops.size())));
    o.Set("owned", Napi::Number::New(info.Env(), double(r->rec->owned.size())));
    // bytes of packed weights the replays so far have used (shared ones counted by each recording)
    o.Set("packedBytes", Napi::Number::New(info.Env(), double(r->rec->packed_bytes.load())));
    return o;
  });
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("graphRecord", Napi::Function::New(env, GraphRecord));
  exports.Set("graphReplay", Napi::Function::New(env, GraphReplay));
  exports.Set("graphRelease", Napi::Function::New(env, GraphRelease));
  exports.Set("graphInfo", Napi::Function::New(env, GraphInfo));
}
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
