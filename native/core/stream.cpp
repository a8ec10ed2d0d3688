#include "stream.h"

#include "error.h"

namespace vffn {

Stream::Stream(std::string name) : name_(std::move(name)) { worker_ = std::thread([this] { run(); }); }

Stream::~Stream() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  if (worker_.joinable()) worker_.join();
}

uint64_t Stream::enqueue(const char* op, Task fn) {
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lk(mu_);
    seq = next_seq_++;
    queue_.push_back(Item{seq, op, std::move(fn)});
  }
  cv_work_.notify_one();
  return seq;
}

void Stream::wait(uint64_t seq) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_done_.wait(lk, [&] { return done_seq_ >= seq; });
}

bool Stream::take_error(StreamError* out) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!has_error_) return false;
  *out = error_;
  has_error_ = false;
  return true;
}

void Stream::set_fatal(const std::string& message) {
  std::lock_guard<std::mutex> lk(mu_);
  if (fatal_.empty()) fatal_ = message;
}

bool Stream::fatal(std::string* message) const {
  std::lock_guard<std::mutex> lk(mu_);
  if (fatal_.empty()) return false;
  if (message) *message = fatal_;
  return true;
}

void Stream::run() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop requested and drained
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    std::string code, message;
    try {
      item.fn();
    } catch (const Error& e) {
      code = e.code;
      message = e.message;
    } catch (const std::bad_alloc&) {
      code = "ERR_OOM";
      message = "out of memory";
    } catch (const std::exception& e) {
      code = "ERR_INTERNAL";
      message = e.what();
    } catch (...) {
      code = "ERR_INTERNAL";
      message = "unknown failure";
    }
    item.fn = nullptr;  // drop captured storage before signalling completion
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!code.empty() && !has_error_) {
        has_error_ = true;
        error_ = StreamError{item.op, code, message};
      }
      done_seq_ = item.seq;
    }
    cv_done_.notify_all();
  }
}

}  // namespace vffn
