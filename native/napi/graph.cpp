// a recorded step: the ops a JS function queues, kept with their plans and run again by one
// native call. graphRecord(fn) runs fn with this thread's enqueue() appending to a list instead
// of the stream; graphReplay(g) queues the whole list as one stream task, each op with its own
// plan (errors belong to tensors exactly as when queued one by one). the ops hold their storages,
// so nothing a recorded op touches can be freed under it; a replay refuses (ERR_DISPOSED) when a
// tensor it reads from outside was disposed in JS since.
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common.h"
#include "storage.h"

namespace vffn::napi {

namespace {

// what the worker runs: the ops, and the storages made while recording (a replay recomputes
// them, so it clears their failures first: a replay never inherits the last one's errors)
struct Recording {
  Device* dev = nullptr;
  std::vector<std::shared_ptr<Planned>> ops;
  std::vector<StoragePtr> owned;
};

}  // namespace

// the JS thread's side: the recording, and weak references to the handles of every outside
// tensor it reads (touched on the JS thread only, so it never travels with a replay)
struct Recorder {
  std::shared_ptr<Recording> rec = std::make_shared<Recording>();
  std::unordered_set<Storage*> owned;
  std::unordered_set<StorageWrap*> seen;
  std::unordered_map<Storage*, std::vector<Napi::ObjectReference>> outside;
  bool released = false;
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

void record_arg(Recorder* r, StorageWrap* h) {
  Storage* s = h->storage.get();
  if (r->owned.count(s) || !r->seen.insert(h).second) return;
  r->outside[s].push_back(Napi::Weak(h->Value()));
}

void not_recording(const char* what) {
  if (t_recorder) fail("ERR_ARGUMENT", std::string(what) + " cannot be part of a recorded step");
}

namespace {

bool handle_alive(const Napi::ObjectReference& ref) {
  Napi::Object o = ref.Value();
  if (o.IsEmpty()) return false;
  return StorageWrap::Unwrap(o)->storage != nullptr;
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
    for (auto it = r->outside.begin(); it != r->outside.end();) {
      bool any = false;
      for (auto& ref : it->second) any = any || handle_alive(ref);
      it = any ? std::next(it) : r->outside.erase(it);
    }
    r->seen.clear();
    r->owned.clear();
    return Napi::External<Recorder>::New(info.Env(), r.release(), [](Napi::Env, Recorder* p) { delete p; });
  });
}

// graphReplay(graph): queues every recorded op, in order, as one task
Napi::Value GraphReplay(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    Recorder* r = graph_arg(info[0]);
    not_recording("graphReplay");
    for (auto& [s, refs] : r->outside) {
      bool any = false;
      for (auto& ref : refs) any = any || handle_alive(ref);
      need(any, "ERR_DISPOSED", "graph: a tensor the recorded step reads has been disposed; record the step again");
    }
    std::shared_ptr<Recording> rec = r->rec;
    if (!rec->dev) return info.Env().Undefined();
    std::string why;
    if (rec->dev->stream.fatal(&why)) fail("ERR_DEVICE", rec->dev->name() + " has failed and cannot replay a step: " + why);
    rec->dev->stream.enqueue("graph", [rec] {
      for (auto& s : rec->owned) s->set_failure(nullptr);
      for (auto& p : rec->ops) p->run();
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
