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

uint64_t Stream::enqueue(const char* op, Task fn) { return push(Item{0, op, std::move(fn), nullptr}); }

uint64_t Stream::enqueue(const char* op, std::shared_ptr<Runnable> job) { return push(Item{0, op, nullptr, std::move(job)}); }

uint64_t Stream::push(Item item) {
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lk(mu_);
    seq = item.seq = next_seq_++;
    queue_.push_back(std::move(item));
  }
  cv_work_.notify_one();
  return seq;
}

void Stream::wait(uint64_t seq) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_done_.wait(lk, [&] { return done_seq_ >= seq; });
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
    std::string escaped;
    try {
      if (item.job) item.job->run();
      else item.fn();
    } catch (const Error& e) {
      escaped = e.code + ": " + e.message;
    } catch (const std::exception& e) {
      escaped = e.what();
    } catch (...) {
      escaped = "unknown failure";
    }
    if (!escaped.empty()) set_fatal(std::string("'") + item.op + "' failed outside any tensor: " + escaped);
    item.fn = nullptr;  // drop captured storage before signalling completion
    item.job.reset();
    {
      std::lock_guard<std::mutex> lk(mu_);
      done_seq_ = item.seq;
    }
    cv_done_.notify_all();
  }
}

}  // namespace vffn
