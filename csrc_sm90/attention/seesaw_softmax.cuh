// The softmax steps of the seesaw schedule (decode_seesaw.cuh, sparse_seesaw.cuh, fp8_decode.cuh), per
// warpgroup: a 64 x 64 score tile S and a 64 x 256 slice of O in wgmma accumulators, of which this thread holds two rows
// (my_row0 and my_row0 + 8: accumulator value v is in row slot (v / 2) % 2), with running maxima in log2
// units and its share of the row sums.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "../common/device_utils.cuh"

namespace flashmla_sm90 {

__device__ __forceinline__ int seesaw_slot_of(int v) { return (v >> 1) & 1; }

// Two 16-bit P values of adjacent columns (accumulator values i, i + 1) into a P tile (tSsP: S's partition of it).
template <class TensorP, class Element>
__device__ __forceinline__ void seesaw_store_p_pair(const TensorP& tSsP, int i, Element p0, Element p1) {
  const Element pair[2] = {p0, p1};
  store_shared_u32(&tSsP(i), *reinterpret_cast<const uint32_t*>(pair));
}

// P = 2^(S - m) into the tile's P buffer (this thread's share, tSsP: S's partition of it); adds this
// thread's share of the row sums to sum. Fenced for the wgmma reads of both warpgroups.
template <typename Element, class FragS, class TensorP>
__device__ __forceinline__ void seesaw_write_p(const FragS& tSrS, const TensorP& tSsP, const float (&m)[2],
                                               float (&sum)[2]) {
  CUTE_UNROLL
  for (int i = 0; i < cute::size(tSrS); i += 2) {  // adjacent accumulator values: adjacent columns
    const int k = seesaw_slot_of(i);
    const float m_use = m[k] == -INFINITY ? 0.f : m[k];
    const float p0 = fast_exp2(tSrS(i) - m_use), p1 = fast_exp2(tSrS(i + 1) - m_use);
    sum[k] += p0 + p1;
    seesaw_store_p_pair(tSsP, i, Element(p0), Element(p1));
  }
  cutlass::arch::fence_view_async_shared();
}

// P = 2^(scale S - m) in place (float) and as 16-bit values in rP (S's accumulator order, which is also the
// order of a register A operand: see decode_seesaw.cuh); adds this thread's share of the row sums to sum.
template <class FragS, class FragP>
__device__ __forceinline__ void seesaw_exp_p(FragS& tSrS, FragP& rP, const float (&m)[2], float (&sum)[2],
                                             float scale) {
  using Element = typename FragP::value_type;
  CUTE_UNROLL
  for (int i = 0; i < cute::size(tSrS); ++i) {
    const int k = seesaw_slot_of(i);
    const float m_use = m[k] == -INFINITY ? 0.f : m[k];
    tSrS(i) = fast_exp2(fmaf(tSrS(i), scale, -m_use));
    sum[k] += tSrS(i);
    rP(i) = Element(tSrS(i));
  }
}

// 16-bit P values (S's accumulator order) into a P tile (tSsP: S's partition of it), fenced for wgmma reads.
template <class FragP, class TensorP>
__device__ __forceinline__ void seesaw_store_p(const FragP& rP, const TensorP& tSsP) {
  CUTE_UNROLL
  for (int i = 0; i < cute::size(rP); i += 2) seesaw_store_p_pair(tSsP, i, rP(i), rP(i + 1));
  cutlass::arch::fence_view_async_shared();
}

// This warpgroup's O slice and row sums from maxima `from` to `to` (to >= from).
template <class FragO>
__device__ __forceinline__ void seesaw_rescale(FragO& tOrO, float (&row_sum)[2], const float (&from)[2],
                                               const float (&to)[2]) {
  float factor[2];
  CUTE_UNROLL
  for (int k = 0; k < 2; ++k) {
    factor[k] = to[k] == -INFINITY ? 1.f : fast_exp2(from[k] - to[k]);
    row_sum[k] *= factor[k];
  }
  if (factor[0] != 1.f || factor[1] != 1.f) {  // the running max rarely moves after a few tiles
    CUTE_UNROLL
    for (int i = 0; i < cute::size(tOrO); ++i) tOrO(i) *= factor[seesaw_slot_of(i)];
  }
}

// Row maxima hand-off through shared memory (one writer per quad).
__device__ __forceinline__ void seesaw_load_max(const float* from, int my_row0, float (&m)[2]) {
  CUTE_UNROLL
  for (int k = 0; k < 2; ++k) m[k] = from[my_row0 + 8 * k];
}
__device__ __forceinline__ void seesaw_store_max(float* to, int my_row0, int lane, const float (&m)[2]) {
  if (lane % 4 == 0) {
    CUTE_UNROLL
    for (int k = 0; k < 2; ++k) to[my_row0 + 8 * k] = m[k];
  }
}

}  // namespace flashmla_sm90
