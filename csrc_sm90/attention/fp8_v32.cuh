// The fp8_v32 cache row (656 bytes, DeepSeek-V3.2) staged in shared memory and turned into a bf16
// row of a swizzled KV tile.
//
//   bytes 0..511    512 x e4m3 (latent), scale k covers dims [128k, 128k + 128)
//   bytes 512..527  4 x float32 scales
//   bytes 528..655  64 x bf16 (RoPE), copied as is
//
// x[d] = bf16(float(e4m3[d]) * scale[d / 128]): e4m3 -> f16 is exact (hardware cvt), f16 -> f32
// exact, one float32 multiply, one round to bf16 — bit for bit what the contract specifies.
//
// Staging: rows are copied verbatim by cp.async (no registers held while in flight) into slots of
// 32 rows (half a KV tile), row stride 704 bytes: 704 = 64 mod 128, so the two rows a quarter-warp
// reads during the dequantization fall in different bank halves.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace flashmla_sm90 {

constexpr int kFp8RowBytes = 656;
constexpr int kFp8ScaleOffset = 512;
constexpr int kFp8RopeOffset = 528;
constexpr int kStagedRowBytes = 704;
constexpr int kStageRows = 32;     // rows per staging slot: half a KV tile
constexpr int kStageSlots = 3;     // ring of half tiles: one tile being dequantized, the next in flight
constexpr int kStageThreadsPerRow = 8;

struct Fp8Staging {
  alignas(128) uint8_t rows[kStageSlots][kStageRows][kStagedRowBytes];
  uint8_t valid[kStageSlots][kStageRows];
};

// cp.async of one cache row into its staging row: thread `part` (0..7) of the row's 8 copies
// 16-byte chunks part, part + 8, ... (41 chunks); zero-filled for a missing key (`src_row` must
// still be a mapped address then), so the tile holds finite values that the key mask removes.
__device__ __forceinline__ void stage_fp8_row_async(uint8_t* staged_row, int part, const uint8_t* src_row,
                                                    bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(staged_row));
  const int src_bytes = valid ? 16 : 0;
  CUTE_UNROLL
  for (int m = 0; m < 6; ++m) {
    const int c = part + kStageThreadsPerRow * m;
    if (c < kFp8RowBytes / 16) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst + 16 * c), "l"(src_row + 16 * c),
                   "r"(src_bytes));
    }
  }
}

__device__ __forceinline__ uint32_t dequant_fp8x2(uint32_t two_e4m3, float scale) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two_e4m3), __NV_E4M3);
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * scale, f.y * scale);
  return *reinterpret_cast<const uint32_t*>(&b);
}

// Dequantizes this thread's quarter of a staged row into row `row` of the bf16 tile (swizzle-128B,
// K-major, 64-column slabs of 64 rows x 128 B). Thread `chunk0` (0..3) takes the 16-byte fp8 chunks
// c = chunk0 + 4j (j = 0..7, dims 16c..16c+15), which become bf16 chunks 2c and 2c + 1: slab j,
// units (2 chunk0) ^ (row % 8) and (2 chunk0 + 1) ^ (row % 8); and RoPE chunks chunk0 and chunk0 + 4
// (slab 8).
__device__ __forceinline__ void dequant_fp8_row(const uint8_t* staged_row, void* smem_tile, int row, int chunk0) {
  char* tile = static_cast<char*>(smem_tile) + row * 128;
  char* even = tile + (((2 * chunk0) ^ (row & 7)) << 4);
  char* odd = tile + (((2 * chunk0 + 1) ^ (row & 7)) << 4);
  const float4 scales = *reinterpret_cast<const float4*>(staged_row + kFp8ScaleOffset);
  CUTE_UNROLL
  for (int j = 0; j < 8; ++j) {
    const float s = j < 2 ? scales.x : j < 4 ? scales.y : j < 6 ? scales.z : scales.w;  // dims 64j / 128
    const uint4 w = *reinterpret_cast<const uint4*>(staged_row + 16 * (chunk0 + 4 * j));
    uint4 lo, hi;
    lo.x = dequant_fp8x2(w.x & 0xffff, s);
    lo.y = dequant_fp8x2(w.x >> 16, s);
    lo.z = dequant_fp8x2(w.y & 0xffff, s);
    lo.w = dequant_fp8x2(w.y >> 16, s);
    hi.x = dequant_fp8x2(w.z & 0xffff, s);
    hi.y = dequant_fp8x2(w.z >> 16, s);
    hi.z = dequant_fp8x2(w.w & 0xffff, s);
    hi.w = dequant_fp8x2(w.w >> 16, s);
    *reinterpret_cast<uint4*>(even + j * (64 * 128)) = lo;
    *reinterpret_cast<uint4*>(odd + j * (64 * 128)) = hi;
  }
  CUTE_UNROLL
  for (int i = 0; i < 2; ++i) {
    const int c = chunk0 + 4 * i;
    *reinterpret_cast<uint4*>(tile + 8 * (64 * 128) + ((c ^ (row & 7)) << 4)) =
        *reinterpret_cast<const uint4*>(staged_row + kFp8RopeOffset + 16 * c);
  }
}

}  // namespace flashmla_sm90
