// Copies into the swizzle-128B, K-major shared-memory tiles that wgmma reads: cp.async rows (any source)
// and TMA boxes (a paged tile inside one page).
#pragma once
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/config.hpp>
#include <cutlass/arch/barrier.h>

#include <cstdint>

#include "../common/device_utils.cuh"
#include "../common/params.h"

namespace flashmla_sm90 {

// Byte offset of 16-byte chunk `chunk` of row `row` in a 64-row, swizzle-128B, K-major tile (the
// layout tile_to_shape(GMMA::Layout_K_SW128_Atom, (64, D)) makes; checked against CuTe by
// csrc_sm90/tests/layout_check.cu): 64-column slabs of 64 rows x 128 B, 16-byte units XOR-ed with
// row % 8 inside each 128-byte row.
__host__ __device__ __forceinline__ int swizzled_chunk_offset(int row, int chunk) {
  return (chunk >> 3) * (64 * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

// Offset (in cache elements) of absolute cache slot idx (0 <= idx < capacity) from its KV head's base: one
// multiply when the pages are contiguous, else page and row by division (a signed division by a runtime
// page size is ~20 instructions, on every gathered row of a producer's critical path).
__device__ __forceinline__ int64_t cache_slot_offset(const AttentionParams& p, int idx) {
  if (p.kv_slot_stride > 0) return int64_t(idx) * p.kv_slot_stride;
  const uint32_t slot = uint32_t(idx), page_size = uint32_t(p.page_size);
  return int64_t(slot / page_size) * p.kv_stride_block + int64_t(slot % page_size) * p.kv_stride_page;
}

// An L2 cache policy (for cp.async's .L2::cache_hint): lines kept (evict_last), read once (evict_first) or the
// default (evict_normal).
enum class L2Hint { kNormal, kKeep, kStream };
__device__ __forceinline__ uint64_t l2_policy(L2Hint hint) {
  uint64_t policy;
  if (hint == L2Hint::kKeep) {
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(policy));
  } else if (hint == L2Hint::kStream) {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;\n" : "=l"(policy));
  }
  return policy;
}

// 16 bytes global -> shared through the L2, zero-filled when !valid, under an L2 cache policy from l2_policy.
__device__ __forceinline__ void cp_async_16_hinted(uint32_t dst, const void* src, bool valid, uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0), "l"(policy));
}

// Copies the 16-byte chunks chunk0, chunk0 + 4, ... (chunk0 < 4) of one row, zero-filled when
// !valid (kHinted: with the L2 cache policy `policy`). Chunk chunk0 + 4i lands in slab i / 2 at unit
// (chunk0 + 4 (i % 2)) ^ (row % 8): two base offsets plus compile-time slab strides, so the unrolled copies
// need no per-chunk arithmetic.
template <int kChunks, bool kHinted = false>
__device__ __forceinline__ void load_tile_row(void* smem_tile, int row, int chunk0, bool valid, const void* src,
                                              uint64_t policy = 0) {
  const uint32_t tile = static_cast<uint32_t>(__cvta_generic_to_shared(smem_tile));
  const uint32_t even = tile + swizzled_chunk_offset(row, chunk0);
  const uint32_t odd = tile + swizzled_chunk_offset(row, chunk0 + 4);
  const char* from = static_cast<const char*>(src) + chunk0 * 16;
  const int src_bytes = valid ? 16 : 0;
  CUTE_UNROLL
  for (int i = 0; i < kChunks / 4; ++i) {
    const uint32_t dst = ((i & 1) ? odd : even) + (i >> 1) * (64 * 128);
    if constexpr (kHinted) {
      cp_async_16_hinted(dst, from + i * 64, valid, policy);
    } else {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(from + i * 64), "r"(src_bytes));
    }
  }
}

// This thread's share of the CTA's Q tile (64 rows of one KV head, s_q-major; rows past the problem's
// rows are zero): chunks copy_chunk0, copy_chunk0 + 4, ... of row copy_row, by cp.async (uncommitted).
template <int kChunks, typename Element, bool kHinted = false>
__device__ __forceinline__ void load_q_tile_rows(const AttentionParams& p, const Element* q, int heads_per_kv,
                                                 Element* smem_q, int m_tile, int kvh, int req, int copy_row,
                                                 int copy_chunk0, uint64_t policy = 0) {
  const int grow = m_tile * kTileRows + copy_row;
  const bool valid = grow < p.rows;
  const Element* src = q;
  if (valid) {
    const int j = grow / heads_per_kv, h = kvh * heads_per_kv + grow % heads_per_kv;
    src = q + req * p.q_stride_b + j * p.q_stride_s + h * p.q_stride_h;
  }
  load_tile_row<kChunks, kHinted>(smem_q, copy_row, copy_chunk0, valid, src, policy);
}

// The CTA's whole Q tile by cp.async from the 256 compute threads (thread tid: row tid / 4), waited for
// and fenced for wgmma reads; the caller then synchronizes those threads. Row and chunk are opaque:
// hoisted out of a request loop, their swizzled offsets were held in registers (and spilled).
template <int kD, typename Element>
__device__ __forceinline__ void load_q_tile(const AttentionParams& p, int heads_per_kv, Element* smem_q, int m_tile,
                                            int kvh, int req, int tid) {
  int copy_row = tid / 4, copy_chunk0 = tid % 4;
  asm volatile("" : "+r"(copy_row), "+r"(copy_chunk0));
  load_q_tile_rows<kD * int(sizeof(Element)) / 16>(p, static_cast<const Element*>(p.q), heads_per_kv, smem_q, m_tile,
                                                   kvh, req, copy_row, copy_chunk0);
  cp_async_commit();
  cp_async_wait<0>();
  cutlass::arch::fence_view_async_shared();
}

// One thread: the kD / 64 boxes (64 dims x 64 tokens each) of the paged tile at `offset` in `page`, for
// KV head kvh, on barrier `full`, which expects the whole tile's bytes.
template <int kD, typename Element>
__device__ __forceinline__ void load_tile_boxes(const AttentionParams& p, uint64_t* full, Element* smem_tile, int offset,
                                                int kvh, int page) {
  cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(full, kD * kTileTokens * sizeof(Element));
  CUTE_UNROLL
  for (int s = 0; s < kD / 64; ++s) {
    cute::SM90_TMA_LOAD_4D::copy(&p.kv_tma, full, uint64_t(cute::TMA::CacheHintSm90::EVICT_NORMAL),
                                 smem_tile + s * 64 * kTileTokens, s * 64, offset, kvh, page);
  }
}

}  // namespace flashmla_sm90
