// Row copies into the swizzle-128B, K-major shared-memory tiles that wgmma reads.
#pragma once
#include <cute/config.hpp>

#include <cstdint>

namespace flashmla_sm90 {

// Byte offset of 16-byte chunk `chunk` of row `row` in a 64-row, swizzle-128B, K-major tile (the
// layout tile_to_shape(GMMA::Layout_K_SW128_Atom, (64, D)) makes; checked against CuTe by
// csrc_sm90/tests/layout_check.cu): 64-column slabs of 64 rows x 128 B, 16-byte units XOR-ed with
// row % 8 inside each 128-byte row.
__host__ __device__ __forceinline__ int swizzled_chunk_offset(int row, int chunk) {
  return (chunk >> 3) * (64 * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

// Copies the 16-byte chunks chunk0, chunk0 + 4, ... (chunk0 < 4) of one row, zero-filled when
// !valid. Chunk chunk0 + 4i lands in slab i / 2 at unit (chunk0 + 4 (i % 2)) ^ (row % 8): two base
// offsets plus compile-time slab strides, so the unrolled copies need no per-chunk arithmetic.
template <int kChunks>
__device__ __forceinline__ void load_tile_row(void* smem_tile, int row, int chunk0, bool valid, const void* src) {
  const uint32_t tile = static_cast<uint32_t>(__cvta_generic_to_shared(smem_tile));
  const uint32_t even = tile + swizzled_chunk_offset(row, chunk0);
  const uint32_t odd = tile + swizzled_chunk_offset(row, chunk0 + 4);
  const char* from = static_cast<const char*>(src) + chunk0 * 16;
  const int src_bytes = valid ? 16 : 0;
  CUTE_UNROLL
  for (int i = 0; i < kChunks / 4; ++i) {
    const uint32_t dst = ((i & 1) ? odd : even) + (i >> 1) * (64 * 128);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(from + i * 64), "r"(src_bytes));
  }
}

}  // namespace flashmla_sm90
