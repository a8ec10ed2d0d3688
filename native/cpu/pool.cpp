#include "pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define VFFN_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define VFFN_PAUSE() asm volatile("yield")
#else
#define VFFN_PAUSE() ((void)0)
#endif

#include "../core/device.h"

namespace vffn::cpu {

namespace {

// how long a thread that has just finished its part keeps polling for the next op before it
// sleeps on the condition variable. a decode step is dozens of ops of a few microseconds each;
// waking a sleeping thread costs a system call on one side and a scheduler wake-up (tens of
// microseconds on a loaded machine) on the other, which was as long as the ops themselves.
// VFFN_SPIN_US sets the starting value, set_spin_us() changes it (0: sleep at once).
std::atomic<int64_t>& spin_setting() {
  static std::atomic<int64_t> ns{[] {
    const char* e = std::getenv("VFFN_SPIN_US");
    long us = e && *e ? std::strtol(e, nullptr, 10) : kDefaultSpinUs;
    return int64_t(std::clamp<long>(us, 0, kMaxSpinUs)) * 1000;
  }()};
  return ns;
}
int64_t spin_ns() { return spin_setting().load(std::memory_order_relaxed); }

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// poll `ready` for up to spin_ns(); true when it became true
template <typename F>
bool spin_until(F ready) {
  const int64_t limit = spin_ns();
  if (limit == 0) return ready();
  const int64_t t0 = now_ns();
  for (int i = 1;; i++) {
    if (ready()) return true;
    VFFN_PAUSE();
    if ((i & 255) == 0 && now_ns() - t0 > limit) return ready();
  }
}

// a generation counter published with release order hands each op to the workers; a worker
// that finds nothing after spinning registers as a sleeper and waits on the condition
// variable. the publisher notifies only when someone sleeps. both sides use sequentially
// consistent order on (gen_, sleepers_) and on (pending_, waiting_), so a wake-up is never lost:
// either the publisher sees the sleeper, or the sleeper's re-check under the mutex sees the work.
class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    stop_all();
    stop_.store(false);
    // new workers must not mistake an earlier generation for work
    const uint64_t gen = gen_.load();
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i, gen] { loop(i, gen); });
  }

  // sleeping workers start polling again (for one spin window) without work: for a caller that
  // knows a burst of ops is coming, so the first op does not wait for a wake-up
  // (any thread: it touches only the atomics, the mutex and the condition variable)
  void wake() {
    if (spin_ns() == 0 || sleepers_.load() == 0) return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      wake_++;
    }
    cv_.notify_all();
  }

  // run body(worker) on every worker and the caller; returns when all are done.
  void run(const std::function<void(int)>& body) {
    if (workers_.empty()) {
      body(0);
      return;
    }
    body_ = &body;
    error_ = nullptr;
    pending_.store(int(workers_.size()));
    gen_.fetch_add(1);
    if (sleepers_.load() > 0) {
      { std::lock_guard<std::mutex> lk(mu_); }
      cv_.notify_all();
    }
    std::exception_ptr mine;
    try {
      body(0);
    } catch (...) {
      mine = std::current_exception();
    }
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lk(mu_);
      waiting_.store(true);
      done_cv_.wait(lk, [&] { return pending_.load() == 0; });
      waiting_.store(false);
    }
    body_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop(int id, uint64_t seen) {
    for (;;) {
      auto fresh = [&] { return stop_.load(std::memory_order_relaxed) || gen_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> lk(mu_);
        sleepers_.fetch_add(1);
        const uint64_t woken = wake_;
        cv_.wait(lk, [&] { return stop_.load() || gen_.load() != seen || wake_ != woken; });
        sleepers_.fetch_sub(1);
        if (!stop_.load() && gen_.load() == seen) continue;  // woken ahead of work: poll again
      }
      if (stop_.load()) return;
      seen = gen_.load(std::memory_order_acquire);
      const std::function<void(int)>* body = body_;
      std::exception_ptr err;
      try {
        (*body)(id);
      } catch (...) {
        err = std::current_exception();
      }
      if (err) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = err;
      }
      if (pending_.fetch_sub(1) == 1 && waiting_.load()) {
        { std::lock_guard<std::mutex> lk(mu_); }
        done_cv_.notify_all();
      }
    }
  }

  void stop_all() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* body_ = nullptr;  // published by gen_
  std::atomic<int> pending_{0}, sleepers_{0};
  std::atomic<bool> waiting_{false}, stop_{false};
  std::atomic<uint64_t> gen_{0};
  uint64_t wake_ = 0;  // under mu_
  std::exception_ptr error_;  // written under mu_, read after pending_ reaches 0
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

void wake_threads() { pool().wake(); }

int spin_us() { return int(spin_ns() / 1000); }
void set_spin_us(int us) { spin_setting().store(int64_t(std::clamp(us, 0, kMaxSpinUs)) * 1000); }

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
