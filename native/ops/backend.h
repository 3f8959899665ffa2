// How op families are declared: once, for every backend. Each native/ops/<family>.h writes its
// declarations inside a macro and hands it to SAFL_DECLARE_FOR_BACKENDS, which repeats them in
// namespace safl::cpu (native/cpu/<family>.cpp) and safl::cuda (native/cuda/<family>.cu), so the
// two backends have identical signatures by construction. CUDA versions take device pointers and
// run on the current stream; a CPU-only build simply never defines or calls them.
//
// Conventions (DESIGN.md §3): arguments in the order outputs, saved buffers, inputs, weights,
// sizes; every pointer has a shape comment; sizes are int64_t. Backward: parameter gradients
// accumulate (+=), activation gradients are written (=), unless the op's header says otherwise.
#pragma once
#include <cstddef>
#include <cstdint>

#define SAFL_DECLARE_FOR_BACKENDS(DECLS) \
  namespace safl {                       \
  namespace cpu {                        \
  DECLS                                  \
  }                                      \
  namespace cuda {                       \
  DECLS                                  \
  }                                      \
  }
