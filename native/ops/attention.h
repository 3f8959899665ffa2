// Multi-head scaled dot-product attention, the core only: for every batch b and head h,
//   out = softmax(q kᵀ · scale + mask) v,   scale = 1/sqrt(Dh).
// The Q/K/V and output projections are linear layers (ops/linear.h) done elsewhere.
//
// Layout. Row r of q is q + (b·T + r)·ld_q; row r of k and v is k + (b·s_cap + r)·ld_kv. Head h is
// the contiguous column block [h·Dh, (h+1)·Dh) of a row. The strides let q, k and v be column
// blocks of one fused QKV projection (ld_q = ld_kv = 3·H·Dh, s_cap = T) and let k and v live in a
// key/value cache that holds s_cap rows per batch, the first S of them in use. out, dout are
// contiguous (row stride H·Dh); lse is (B, H, T).
//
// Masking. causal == false: every query sees all S keys (encoder self-attention, cross-attention
// with S != T). causal == true: query i sees keys j <= i + (S - T), so T == S is the usual causal
// mask and T = 1, S = t + 1 is one step of cached decoding (every key visible). Causal needs S >= T.
// Every query sees at least key 0 (the checks require S >= 1 when T >= 1), so the softmax is
// always defined.
//
// Forward writes out and lse, the natural log of Σ_j exp(score_ij) over the visible keys.
// Backward recomputes the probabilities from q, k and lse (no saved softmax) and WRITES (=) dq, dk
// and dv, which share the strides of q, k and v (dq rows ld_q apart; dk, dv rows ld_kv apart with
// s_cap rows per batch), so a fused dQKV buffer works too. Only the head columns of rows [0, T) of
// dq and rows [0, S) of dk, dv are written; columns beyond H·Dh and rows [S, s_cap) are untouched.
// Keys no query sees get dk = dv = 0. The gradients must not overlap the inputs. With P the
// probabilities (0 where masked):
//   dv = Pᵀ dO,  dP = dO vᵀ,  D_i = Σ_j P_ij dP_ij = rowsum(dO_i ∘ O_i),  dS = P ∘ (dP − D),
//   dq = scale · dS k,  dk = scale · dSᵀ q.
//
// Sizes: B, T, S, H, Dh >= 0 (zero sizes do nothing but write what is well defined: with Dh = 0,
// lse = log(number of visible keys)); S <= s_cap; ld_q, ld_kv >= H·Dh.
//
// attention_forward / attention_backward are the fused fast path that the model uses (tiles of
// queries × keys, online softmax, deterministic for any thread count). The _reference versions
// in safl::cpu materialise the (T, S) score matrix per (b, h) and are the oracle for the fast path.
#pragma once
#include "common/error.h"
#include "ops/backend.h"

#define SAFL_ATTENTION_DECLS                                                                      \
  void attention_forward(float* out /* (B, T, H*Dh) */, float* lse /* (B, H, T) */,              \
                         const float* q /* (B, T, ld_q) */, const float* k /* (B, s_cap, ld_kv) */, \
                         const float* v /* (B, s_cap, ld_kv) */, int64_t B, int64_t T, int64_t S,  \
                         int64_t H, int64_t Dh, int64_t ld_q, int64_t ld_kv, int64_t s_cap,        \
                         bool causal);                                                             \
  void attention_backward(float* dq /* (B, T, ld_q), = */, float* dk /* (B, s_cap, ld_kv), = */,  \
                          float* dv /* (B, s_cap, ld_kv), = */,                                    \
                          const float* out /* (B, T, H*Dh) the forward's output */,               \
                          const float* lse /* (B, H, T) the forward's lse */,                     \
                          const float* dout /* (B, T, H*Dh) */, const float* q /* (B, T, ld_q) */, \
                          const float* k /* (B, s_cap, ld_kv) */,                                  \
                          const float* v /* (B, s_cap, ld_kv) */, int64_t B, int64_t T, int64_t S, \
                          int64_t H, int64_t Dh, int64_t ld_q, int64_t ld_kv, int64_t s_cap,       \
                          bool causal);
SAFL_DECLARE_FOR_BACKENDS(SAFL_ATTENTION_DECLS)
#undef SAFL_ATTENTION_DECLS

namespace safl::detail {
// The argument checks both backends run first (identical messages on CPU and CUDA).
// Note [every query sees a key]: S >= 1 whenever T >= 1, and causal attention needs S >= T, so
// query i sees keys 0 .. i + S - T, never none. The softmax denominator is then at least 1 after
// the row maximum is subtracted, and lse is finite.
inline void check_attention_sizes(const char* op, int64_t B, int64_t T, int64_t S, int64_t H, int64_t Dh,
                                  int64_t ld_q, int64_t ld_kv, int64_t s_cap, bool causal) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(T >= 0, op, ": expected T >= 0 but received ", T);
  SAFL_CHECK_RANGE(S >= 0, op, ": expected S >= 0 but received ", S);
  SAFL_CHECK_RANGE(H >= 0, op, ": expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(Dh >= 0, op, ": expected Dh >= 0 but received ", Dh);
  SAFL_CHECK_RANGE(s_cap >= S, op, ": expected s_cap >= S = ", S, " but received ", s_cap);
  SAFL_CHECK_RANGE(ld_q >= H * Dh, op, ": expected ld_q >= H*Dh = ", H * Dh, " but received ", ld_q);
  SAFL_CHECK_RANGE(ld_kv >= H * Dh, op, ": expected ld_kv >= H*Dh = ", H * Dh, " but received ", ld_kv);
  SAFL_CHECK_RANGE(!causal || S >= T, op, ": expected S >= T = ", T, " for causal attention but received ", S);
  SAFL_CHECK_RANGE(T == 0 || S >= 1, op, ": expected S >= 1 when T >= 1 but received ", S);
}
}  // namespace safl::detail

namespace safl::cpu {
// The readable references: same contracts as attention_forward / attention_backward.
// attention_backward_reference does not read `out`: it takes D_i = Σ_j P_ij dP_ij from the
// materialised matrices instead of rowsum(dO_i ∘ O_i), so it also checks the fast path's shortcut.
void attention_forward_reference(float* out, float* lse, const float* q, const float* k,
                                 const float* v, int64_t B, int64_t T, int64_t S, int64_t H,
                                 int64_t Dh, int64_t ld_q, int64_t ld_kv, int64_t s_cap, bool causal);
void attention_backward_reference(float* dq, float* dk, float* dv, const float* out,
                                  const float* lse, const float* dout, const float* q,
                                  const float* k, const float* v, int64_t B, int64_t T, int64_t S,
                                  int64_t H, int64_t Dh, int64_t ld_q, int64_t ld_kv,
                                  int64_t s_cap, bool causal);
}  // namespace safl::cpu
