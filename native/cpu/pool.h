// the thread pool inside each CPU op. the stream's worker calls parallel_for; the pool's
// threads plus the caller split [0, n) into contiguous chunks. a chunk's result never depends
// on how many threads there are, as long as callers split only independent work (never a
// reduction's K dimension), so results are identical at every thread count.
#pragma once
#include <cstdint>
#include <functional>

namespace vffn::cpu {

int threads();
void set_threads(int n);  // n <= 0: hardware concurrency

// microseconds a pool thread polls for the next op after finishing one, before it sleeps
constexpr int kDefaultSpinUs = 200, kMaxSpinUs = 100000;
int spin_us();
void set_spin_us(int us);
// sleeping pool threads start polling now, ahead of a burst of ops (a replayed step)
void wake_threads();

// fn(begin, end, worker) over [0, n) in chunks of at least `grain`.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);

// fn(task, worker) for task in [0, n): dynamic scheduling for uneven tasks.
void parallel_tasks(int64_t n, const std::function<void(int64_t, int)>& fn);

}  // namespace vffn::cpu
