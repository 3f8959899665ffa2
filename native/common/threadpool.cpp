// Persistent thread pool behind parallel_for / parallel_run (see threadpool.h).
#include "common/threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"

namespace safl {
namespace {

thread_local bool tls_inside_pool_task = false;

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
  void run(int64_t n_tasks, const std::function<void(int64_t)>& task) {
    std::lock_guard<std::mutex> dispatch(dispatch_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      n_tasks_ = n_tasks;
      next_task_.store(0);
      busy_workers_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    work_through_tasks();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return busy_workers_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void start(int threads) {
    quit_ = false;
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  void work_through_tasks() {
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

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
      }
      work_through_tasks();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--busy_workers_ == 0) done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex dispatch_mutex_;  // one run() at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  int busy_workers_ = 0;
  uint64_t generation_ = 0;
  bool quit_ = false;
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
