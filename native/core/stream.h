// an ordered queue of work drained by one worker thread. every device owns one: on CPU the
// worker computes, on CUDA it launches onto the device's cudaStream. ops enqueue and return;
// waits are promises resolved when the worker reaches them.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace vffn {

struct StreamError {
  std::string op, code, message;
};

class Stream {
 public:
  using Task = std::function<void()>;
  // on_error(op, code, message) is called on the worker when a task throws.
  explicit Stream(std::string name);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // enqueue work; returns its sequence number. `op` names it in errors.
  uint64_t enqueue(const char* op, Task fn);
  // block the caller until every task up to `seq` has run (never call from the JS thread).
  void wait(uint64_t seq);
  // the first error since the last take, cleared by taking it.
  bool take_error(StreamError* out);
  // device failed for good: every later call reports it.
  void set_fatal(const std::string& message);
  bool fatal(std::string* message) const;
  uint64_t submitted() const { return next_seq_ - 1; }

 private:
  void run();
  struct Item {
    uint64_t seq;
    const char* op;
    Task fn;
  };
  std::string name_;
  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::deque<Item> queue_;
  uint64_t next_seq_ = 1, done_seq_ = 0;
  bool stop_ = false, has_error_ = false;
  StreamError error_;
  std::string fatal_;
  std::thread worker_;
};

}  // namespace vffn
