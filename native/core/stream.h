// an ordered queue of work drained by one worker thread. every device owns one: on CPU the
// worker computes, on CUDA it launches onto the device's cudaStream. ops enqueue and return;
// waits are promises resolved when the worker reaches them. errors belong to the tensors an op
// writes (napi/common.h: enqueue); the stream itself only knows whether its device has failed
// for good.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace vffn {

// work the stream runs through a pointer it shares (a planned op, napi/common.h): queuing one costs
// no allocation beyond the object itself
struct Runnable {
  virtual ~Runnable() = default;
  virtual void run() = 0;
};

class Stream {
 public:
  using Task = std::function<void()>;
  explicit Stream(std::string name);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // enqueue work; returns its sequence number. `op` names it. a task should catch its own
  // errors; one that escapes marks the device failed for good (nothing else could report it).
  uint64_t enqueue(const char* op, Task fn);
  uint64_t enqueue(const char* op, std::shared_ptr<Runnable> job);
  // block the caller until every task up to `seq` has run (never call from the JS thread).
  void wait(uint64_t seq);
  // device failed for good: every later call reports it.
  void set_fatal(const std::string& message);
  bool fatal(std::string* message) const;

 private:
  void run();
  struct Item {
    uint64_t seq;
    const char* op;
    Task fn;
    std::shared_ptr<Runnable> job;
  };
  // queues item under its sequence number (set here) and wakes the worker
  uint64_t push(Item item);
  std::string name_;
  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::deque<Item> queue_;
  uint64_t next_seq_ = 1, done_seq_ = 0;
  bool stop_ = false;
  std::string fatal_;
  std::thread worker_;
};

}  // namespace vffn
