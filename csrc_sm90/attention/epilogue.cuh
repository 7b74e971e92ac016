// The end of one request's work in a CTA: the softmax row sums of the two warpgroups are added, and the
// warpgroup's 64 x 256 slice of O goes out — finished (16-bit output, natural-log lse, attn_sink) when
// the request has one split, else as a normalized float32 partial with a log2 lse for the combine.
// Shared by the attention kernels: each warpgroup holds O[:, 256 wg, 256 wg + 256) in a wgmma
// accumulator, the running row maxima of its two rows (identical in both warpgroups) and its share of
// the row sums, scaled to those maxima.
#pragma once

#include <cute/tensor.hpp>

#include "../common/device_utils.cuh"
#include "../common/params.h"

namespace flashmla_sm90 {

// kRoleSplit: for kernels whose registers are at their limit around this call (the fp8 producer kernel, whose
// two warpgroups run it from different code, one within 168 registers; the dense seesaw): the row-sum
// hand-off is an unaligned barrier, the inputs are opaque (nothing derived from them is hoisted out of the
// request loop and held), and output addresses are a per-row base at the thread's first column plus each
// column's compile-time distance from it (from the pointer itself, each column's 64-bit offset is computed
// and held in registers, which spills there; the two-buffer and sparse seesaw kernels spill with the base
// form instead).
// kVecStores: finished outputs by 16-byte stores (below); false keeps 4-byte stores (the dense seesaw: its main loop
// measured ~1 % slower with the 16-byte form's code, its rows being mostly split).
// kPartialMax: partials also carry their row maxima (p.max_accum, for a split sparse prefill's max_logits); only
// the kernel that serves split prefills compiles it (the store reshuffled the others' register allocation).
template <typename Element, bool kSparse, bool kRoleSplit = false, bool kVecStores = true, bool kPartialMax = false,
          class FragO, class CoordO>
__device__ __forceinline__ void store_attention_output(const AttentionParams& p, float (*row_sum_smem)[kTileRows],
                                                       int barrier_id, FragO& tOrO, const CoordO& tOcO,
                                                       const float (&row_max)[2], const float (&row_sum)[2],
                                                       int m_tile, int kvh, int req, int slot, int n_splits) {
  using namespace cute;
  constexpr float kNegInf = -INFINITY;
  int tid = threadIdx.x, heads_per_kv = p.h_q / p.h_kv;
  // kRoleSplit: opaque, so that nothing derived from them (row indices, the divisor's reciprocal) is hoisted
  // out of the request loop and held (spilled) through it
  if constexpr (kRoleSplit) asm volatile("" : "+r"(tid), "+r"(heads_per_kv));
  const int wg = tid / 128, lane = tid % 32;
  const int my_row0 = (tid % 128 / 32) * 16 + lane / 4;  // wgmma C layout: rows my_row0, my_row0 + 8
  auto slot_of = [](int v) { return (v >> 1) & 1; };
  CUTE_UNROLL
  for (int k = 0; k < 2; ++k) {
    const float s = quad_sum(row_sum[k]);
    if (lane % 4 == 0) row_sum_smem[wg][my_row0 + 8 * k] = s;
  }
  if constexpr (kRoleSplit) {
    named_barrier_unaligned(barrier_id, 256);
  } else {
    named_barrier(barrier_id, 256);
  }
  float inv_sum[2], lse2[2];
  CUTE_UNROLL
  for (int k = 0; k < 2; ++k) {
    const int r = my_row0 + 8 * k;
    const float total = row_sum_smem[0][r] + row_sum_smem[1][r];
    // __fdividef: an IEEE 1/x has a slow-path call, around which a kernel at its register limit spills
    inv_sum[k] = total > 0.f ? __fdividef(1.f, total) : 0.f;
    lse2[k] = total > 0.f ? row_max[k] + log2f(total) : kNegInf;
  }
  const bool finished_here = n_splits <= 1;
  float factor[2];
  bool row_ok[2];
  CUTE_UNROLL
  for (int k = 0; k < 2; ++k) {
    const int grow = m_tile * kTileRows + my_row0 + 8 * k;
    row_ok[k] = grow < p.rows;
    factor[k] = inv_sum[k];
    if (finished_here && p.attn_sink != nullptr && lse2[k] != kNegInf && row_ok[k]) {
      const int h = kvh * heads_per_kv + grow % heads_per_kv;
      factor[k] = __fdividef(factor[k], 1.f + __expf(p.attn_sink[h] - lse2[k] * kLn2));
    }
  }
  // Accumulator values i and i + 1 are adjacent columns of one row.
  const int col0 = kRoleSplit ? get<1>(tOcO(0)) : 0;
  if (finished_here) {
    Element* out_row[2];
    CUTE_UNROLL
    for (int k = 0; k < 2; ++k) {
      const int grow = m_tile * kTileRows + my_row0 + 8 * k;
      const int j = grow / heads_per_kv, h = kvh * heads_per_kv + grow % heads_per_kv;
      out_row[k] = static_cast<Element*>(p.out) + req * p.out_stride_b + j * p.out_stride_s + h * p.out_stride_h +
                   wg * 256 + col0;
    }
    if constexpr (kVecStores) {
      // 16-byte stores. Accumulator value 4j + 2k + e of lane q is row slot k, column 8j + 2q + e: the quad holds
      // each 8-column group as four 4-byte pairs. Transposed across the quad in blocks of four groups, lane q
      // holds group 4g + q whole: a quarter of the store instructions, each writing 64 contiguous bytes of a row
      // instead of 16 (the 4-byte stores held the epilogue on the store queue: 3-4 % of the sparse prefill and of
      // the unsplit sparse decode rows, docs/benchmarks/sm90-sparse.md, "Twelfth session"). The quad lane comes
      // from an opaque copy of the thread index: values derived from it would be hoisted out of the caller's
      // request loop and held (spilled) through it in the producer/consumer kernels. (The binding allocates
      // the outputs: every row starts 16-byte aligned.)
      int vec_lane = threadIdx.x % 32;
      asm volatile("" : "+r"(vec_lane));
      const int q = vec_lane % 4, vec_col = 8 * q - col0;
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) {
        Element* row_vec = out_row[k] + vec_col;
        asm volatile("" : "+l"(row_vec));  // one base per row, compile-time offsets from it
        CUTE_UNROLL
        for (int g = 0; g < size(tOrO) / 16; ++g) {
          uint32_t v[4];
          CUTE_UNROLL
          for (int t = 0; t < 4; ++t) {
            const int i = 4 * (4 * g + t) + 2 * k;
            const Element pair[2] = {Element(tOrO(i) * factor[k]), Element(tOrO(i + 1) * factor[k])};
            v[t] = *reinterpret_cast<const uint32_t*>(pair);
          }
          quad_transpose(v, vec_lane);
          if (row_ok[k]) *reinterpret_cast<uint4*>(row_vec + 32 * g) = make_uint4(v[0], v[1], v[2], v[3]);
        }
      }
    } else {
      CUTE_UNROLL
      for (int i = 0; i < size(tOrO); i += 2) {
        const int k = slot_of(i);
        if (row_ok[k]) {
          const Element pair[2] = {Element(tOrO(i) * factor[k]), Element(tOrO(i + 1) * factor[k])};
          *reinterpret_cast<uint32_t*>(out_row[k] + (get<1>(tOcO(i)) - col0)) = *reinterpret_cast<const uint32_t*>(pair);
        }
      }
    }
    if (wg == 0 && lane % 4 == 0) {
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) {
        const int grow = m_tile * kTileRows + my_row0 + 8 * k;
        if (row_ok[k]) {
          const int j = grow / heads_per_kv, h = kvh * heads_per_kv + grow % heads_per_kv;
          const int64_t at = req * p.lse_stride_b + h * p.lse_stride_h + j * p.lse_stride_s;
          p.lse[at] = lse2[k] == kNegInf ? INFINITY : lse2[k] * kLn2;
          if (kSparse && p.max_logits != nullptr) p.max_logits[at] = row_max[k] * kLn2;
        }
      }
    }
  } else {
    const int64_t base = (int64_t(slot) * p.h_kv + kvh) * p.rows;
    float* accum_row[2];
    CUTE_UNROLL
    for (int k = 0; k < 2; ++k) {
      accum_row[k] = p.o_accum + (base + m_tile * kTileRows + my_row0 + 8 * k) * kHeadDimV + wg * 256 + col0;
    }
    CUTE_UNROLL
    for (int i = 0; i < size(tOrO); i += 2) {
      const int k = slot_of(i);
      if (row_ok[k]) {
        store_global_f32x2(accum_row[k] + (get<1>(tOcO(i)) - col0), tOrO(i) * factor[k], tOrO(i + 1) * factor[k]);
      }
    }
    if (wg == 0 && lane % 4 == 0) {
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) {
        const int grow = m_tile * kTileRows + my_row0 + 8 * k;
        if (row_ok[k]) {
          p.lse_accum[base + grow] = lse2[k];
          if (kPartialMax && p.max_accum != nullptr) p.max_accum[base + grow] = row_max[k];
        }
      }
    }
  }
}

}  // namespace flashmla_sm90
