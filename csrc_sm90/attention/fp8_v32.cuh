// The fp8_v32 cache row (656 bytes, DeepSeek-V3.2) staged in shared memory and turned into a bf16
// row of a swizzled KV tile.
//
//   bytes 0..511    512 x e4m3 (latent), scale k covers dims [128k, 128k + 128)
//   bytes 512..527  4 x float32 scales
//   bytes 528..655  64 x bf16 (RoPE), copied as is
//
// x[d] = bf16(float(e4m3[d]) * scale[d / 128]): one float32 rounding of the exact product, one
// round to bf16 — bit for bit what the contract specifies (dequant_fp8x4).
//
// Staging: rows are copied verbatim by cp.async (no registers held while in flight) into slots of
// 32 rows (half a KV tile), row stride 704 bytes: 704 = 64 mod 128, so the two rows a quarter-warp
// reads during the dequantization fall in different bank halves.
#pragma once

#include <cuda_bf16.h>

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

// float32 multiply that keeps subnormal inputs (the build may flush them: --use_fast_math)
__device__ __forceinline__ float mul_keep_subnormals(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// Four e4m3 (the bytes of w) times `scale` -> four bf16, on the integer and FMA pipes (the hardware
// e4m3 and f16 -> f32 conversions run at a quarter of that rate and bounded the first version).
// |e| placed in a float32 as (bits & 0x7f) << 20 is exactly |e| * 2^-120, subnormals included, so
// one multiply by scale * 2^120 (exact: a power of two) rounds |e| * scale once, as the contract
// does; scales >= 2^8 would overflow that factor and take two multiplies. The sign goes in after
// the round (scale > 0). NaN encodings (0x7f/0xff, which no quantizer writes) come out as +-480.
__device__ __forceinline__ uint2 dequant_fp8x4(uint32_t w, float scale) {
  const uint32_t m = w & 0x7f7f7f7fu;
  float f[4] = {__uint_as_float((m << 20) & 0x07f00000u), __uint_as_float((m << 12) & 0x07f00000u),
                __uint_as_float((m << 4) & 0x07f00000u), __uint_as_float((m >> 4) & 0x07f00000u)};
  if (scale < 256.f) {
    const float s = scale * 0x1p120f;
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) f[i] = mul_keep_subnormals(f[i], s);
  } else {
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) f[i] = mul_keep_subnormals(f[i], 0x1p120f) * scale;
  }
  const uint32_t sign = w & 0x80808080u;  // byte k's sign bit -> bit 15 or 31 of its bf16 pair
  return make_uint2(pack_bf16x2(f[0], f[1]) | __byte_perm(sign, 0, 0x1404),
                    pack_bf16x2(f[2], f[3]) | __byte_perm(sign, 0, 0x3424));
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
    const uint2 d0 = dequant_fp8x4(w.x, s), d1 = dequant_fp8x4(w.y, s);
    const uint2 d2 = dequant_fp8x4(w.z, s), d3 = dequant_fp8x4(w.w, s);
    *reinterpret_cast<uint4*>(even + j * (64 * 128)) = make_uint4(d0.x, d0.y, d1.x, d1.y);
    *reinterpret_cast<uint4*>(odd + j * (64 * 128)) = make_uint4(d2.x, d2.y, d3.x, d3.y);
  }
  CUTE_UNROLL
  for (int i = 0; i < 2; ++i) {
    const int c = chunk0 + 4 * i;
    *reinterpret_cast<uint4*>(tile + 8 * (64 * 128) + ((c ^ (row & 7)) << 4)) =
        *reinterpret_cast<const uint4*>(staged_row + kFp8RopeOffset + 16 * c);
  }
}

}  // namespace flashmla_sm90
