#include "pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "../core/device.h"

namespace vffn::cpu {

namespace {

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    stop_all();
    stop_ = false;
    // new workers must not mistake an earlier generation for work
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lk(mu_);
      gen = gen_;
    }
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i, gen] { loop(i, gen); });
  }

  // run body(worker) on every worker and the caller; returns when all are done.
  void run(const std::function<void(int)>& body) {
    if (workers_.empty()) {
      body(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      body_ = &body;
      pending_ = int(workers_.size());
      error_ = nullptr;
      gen_++;
    }
    cv_.notify_all();
    std::exception_ptr mine;
    try {
      body(0);
    } catch (...) {
      mine = std::current_exception();
    }
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    body_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop(int id, uint64_t seen) {
    for (;;) {
      const std::function<void(int)>* body;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
        body = body_;
      }
      std::exception_ptr err;
      try {
        (*body)(id);
      } catch (...) {
        err = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (err && !error_) error_ = err;
        if (--pending_ == 0) done_cv_.notify_all();
      }
    }
  }

  void stop_all() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* body_ = nullptr;
  int pending_ = 0;
  uint64_t gen_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

int default_threads() {
  unsigned h = std::thread::hardware_concurrency();
  return h ? int(h) : 1;
}

Pool& pool() {
  static Pool* p = new Pool(default_threads());
  return *p;
}

}  // namespace

int threads() { return pool().size(); }

// callers queue resizing on the CPU stream so it never races an op that is using the pool
void set_threads(int n) {
  if (n <= 0) n = default_threads();
  pool().resize(std::min(n, 256));
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t nt = std::min<int64_t>(pool().size(), (n + grain - 1) / grain);
  if (nt <= 1) {
    fn(0, n, 0);
    return;
  }
  pool().run([&](int w) {
    if (w >= nt) return;
    int64_t b = n * w / nt, e = n * (w + 1) / nt;
    if (b < e) fn(b, e, w);
  });
}

void parallel_tasks(int64_t n, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  if (n == 1 || pool().size() == 1) {
    for (int64_t i = 0; i < n; i++) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  pool().run([&](int w) {
    for (int64_t i = next++; i < n; i = next++) fn(i, w);
  });
}

}  // namespace vffn::cpu

namespace vffn {
int cpu_threads() { return cpu::threads(); }
void set_cpu_threads(int n) { cpu::set_threads(n); }
}  // namespace vffn
