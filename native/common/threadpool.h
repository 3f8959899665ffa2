// The core's one persistent thread pool. Size = hardware cores by default, settable at run time
// (from JS through the addon). parallel_for splits a range into chunks that the pool's workers
// and the calling thread take in turn; it blocks until every chunk is done and rethrows the first
// exception a chunk threw.
//
// Note [nested and concurrent parallel_for]: a parallel_for issued from inside a pool task runs
// serially on that thread (no deadlock, no oversubscription). Two callers on different threads
// (two AsyncWorkers, say) take the pool one after the other.
#pragma once
#include <cstdint>
#include <functional>

namespace safl {

// Number of threads that run a parallel_for (workers + the caller), >= 1.
int num_threads();
// Resize the pool; throws a RangeError unless 1 <= n <= 1024.
void set_num_threads(int n);
// Hardware concurrency as the OS reports it (>= 1).
int hardware_threads();

// Calls body(lo, hi) over disjoint chunks covering [begin, end), each at least `grain` long
// (except the last). Serial when the range is small, the pool has one thread, or when nested.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t lo, int64_t hi)>& body);

// Calls body(t, n) once for each t in [0, n) with n = min(num_threads(), max_tasks), concurrently;
// for kernels that partition work statically (GEMM). Per-task scratch must be indexed by t.
void parallel_run(int max_tasks, const std::function<void(int t, int n)>& body);

}  // namespace safl
