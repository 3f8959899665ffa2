// Persistent thread pool behind parallel_for / parallel_run (see threadpool.h).
//
// Note [spin before sleeping]: a worker that finishes a run polls for the next one for
// kSpinBeforeSleep before it blocks on the condition variable, and the caller polls for the
// workers' completion as long before it blocks. Back-to-back parallel regions (a training
// step issues thousands) then cost about a microsecond to hand out instead of a futex wake-up
// per worker, which on a virtual machine also lets the scheduler park the woken worker on the
// caller's core for a while (measured on the 2-vCPU dev machine: 55 µs -> 1.3 µs per empty
// parallel_run; a 1 ms SGEMM on 2 threads 130 -> 215 GFLOP/s).
//
// Note [the caller's settings follow its tasks]: a worker runs a run's tasks under the matrix
// precision of the thread that issued the run (common/matmul_precision.h), as the caller itself
// does, so a chunk computes the same whichever thread takes it.
#include "common/threadpool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/matmul_precision.h"

namespace safl {
namespace {

thread_local bool tls_inside_pool_task = false;

constexpr std::chrono::microseconds kSpinBeforeSleep(200);  // Note [spin before sleeping]

// Polls done() until it holds or kSpinBeforeSleep has passed; true if it holds.
template <class Done>
bool spin_until(Done done) {
  const auto give_up = std::chrono::steady_clock::now() + kSpinBeforeSleep;
  for (int i = 0;; ++i) {
    if (done()) return true;
    if ((i & 63) == 63 && std::chrono::steady_clock::now() >= give_up) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads) { start(threads); }
  ~ThreadPool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    std::lock_guard<std::mutex> dispatch(dispatch_mutex_);
    if (threads == size()) return;
    stop();
    start(threads);
  }

  // Runs task(i) for i in [0, n_tasks): workers and the caller pull indices until none remain.
  // Note [join before working]: a worker takes part in a run only by joining it (a ticket) before
  // it touches the run; once the caller has no tasks left it closes the run and waits only for
  // the workers that joined. A worker the OS has not scheduled yet (another process holds the
  // core) finds the run closed when it wakes and goes back to waiting, instead of the caller
  // waiting for it to wake only to find nothing left to do.
  void run(int64_t n_tasks, const std::function<void(int64_t)>& task) {
    std::lock_guard<std::mutex> dispatch(dispatch_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      precision_ = matmul_precision();  // Note [the caller's settings follow its tasks]
      n_tasks_ = n_tasks;
      next_task_.store(0);
      finished_workers_ = 0;
      finished_flag_.store(0);
      error_ = nullptr;
      ++generation_;
      ticket_.store(ticket_generation(generation_));
      published_generation_.store(generation_);
    }
    wake_.notify_all();
    work_through_tasks();
    const int joined = static_cast<int>(ticket_.fetch_or(kClosed) & kJoinedMask);
    spin_until([&] { return finished_flag_.load() == joined; });
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return finished_workers_ == joined; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void start(int threads) {
    quit_ = false;
    quit_flag_.store(false);
    // A new worker has seen every run so far: it waits for the next one.
    const uint64_t current = generation_;
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, current] { worker_loop(current); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
      quit_flag_.store(true);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  void work_through_tasks() {
    const MatmulPrecisionScope precision(precision_);
    const bool was_inside = tls_inside_pool_task;
    tls_inside_pool_task = true;
    for (;;) {
      const int64_t i = next_task_.fetch_add(1);
      if (i >= n_tasks_) break;
      try {
        (*task_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_task_.store(n_tasks_);  // stop handing out work
      }
    }
    tls_inside_pool_task = was_inside;
  }

  // The ticket of a run: its generation in the high 32 bits, kClosed, then the joined count.
  static constexpr uint64_t kClosed = uint64_t(1) << 31;
  static constexpr uint64_t kJoinedMask = kClosed - 1;
  static uint64_t ticket_generation(uint64_t generation) { return (generation & 0xFFFFFFFFu) << 32; }

  // Note [join before working]: true when this worker joined run `generation` before it closed.
  bool join(uint64_t generation) {
    uint64_t ticket = ticket_.load();
    while ((ticket & ~(kClosed | kJoinedMask)) == ticket_generation(generation) && !(ticket & kClosed))
      if (ticket_.compare_exchange_weak(ticket, ticket + 1)) return true;
    return false;
  }

  void worker_loop(uint64_t seen) {
    for (;;) {
      {
        spin_until([&] { return published_generation_.load() != seen || quit_flag_.load(); });
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
      }
      if (!join(seen)) continue;
      work_through_tasks();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        finished_flag_.store(++finished_workers_);
      }
      done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex dispatch_mutex_;  // one run() at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  MatmulPrecision precision_ = MatmulPrecision::Float32;  // the run's caller's
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  int finished_workers_ = 0;  // workers of this run that joined it and are done
  uint64_t generation_ = 0;
  bool quit_ = false;
  std::atomic<uint64_t> ticket_{0};  // Note [join before working]
  // Mirrors of generation_, finished_workers_ and quit_ that the spinning loops read without the
  // mutex (Note [spin before sleeping]); the mutex-guarded fields stay the source of truth.
  std::atomic<uint64_t> published_generation_{0};
  std::atomic<int> finished_flag_{0};
  std::atomic<bool> quit_flag_{false};
  std::exception_ptr error_;
};

ThreadPool& pool() {
  static ThreadPool instance(hardware_threads());
  return instance;
}

}  // namespace

int hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

int num_threads() { return pool().size(); }

void set_num_threads(int n) {
  SAFL_CHECK_RANGE(n >= 1 && n <= 1024, "set_num_threads: expected 1 <= threads <= 1024 but received ", n);
  pool().resize(n);
}

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& body) {
  if (end <= begin) return;
  const int64_t n = end - begin;
  grain = std::max<int64_t>(1, grain);
  const int threads = tls_inside_pool_task ? 1 : num_threads();
  const int64_t max_chunks = (n + grain - 1) / grain;
  if (threads == 1 || max_chunks == 1) {
    body(begin, end);
    return;
  }
  // A few chunks per thread balance uneven work without much scheduling overhead.
  const int64_t chunks = std::min<int64_t>(max_chunks, int64_t(threads) * 4);
  const int64_t chunk = (n + chunks - 1) / chunks;
  const int64_t n_tasks = (n + chunk - 1) / chunk;
  pool().run(n_tasks, [&](int64_t i) {
    const int64_t lo = begin + i * chunk;
    body(lo, std::min(end, lo + chunk));
  });
}

void parallel_run(int max_tasks, const std::function<void(int, int)>& body) {
  const int n = tls_inside_pool_task ? 1 : std::max(1, std::min(num_threads(), max_tasks));
  if (n == 1) {
    body(0, 1);
    return;
  }
  pool().run(n, [&](int64_t t) { body(static_cast<int>(t), n); });
}

}  // namespace safl
