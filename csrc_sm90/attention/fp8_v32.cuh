// The fp8_v32 cache row (656 bytes, DeepSeek-V3.2) turned into a bf16 row of a swizzled KV tile.
//
//   bytes 0..511    512 x e4m3 (latent), scale k covers dims [128k, 128k + 128)
//   bytes 512..527  4 x float32 scales
//   bytes 528..655  64 x bf16 (RoPE), copied as is
//
// x[d] = bf16(float(e4m3[d]) * scale[d / 128]): e4m3 -> f16 is exact (hardware cvt), f16 -> f32
// exact, one float32 multiply, one round to bf16 — bit for bit what the contract specifies (the
// build flushes float32 subnormal products to zero: only scales below ~2^-117 could produce one).
//
// Who does what. The 4 threads of a tile row split it as the bf16 gather does: thread `chunk0`
// (0..3) owns the 16-byte fp8 chunks c = chunk0 + 4j (j = 0..7; dims 16c..16c+15) and the RoPE
// chunks chunk0 and chunk0 + 4. The RoPE part goes by cp.async; the fp8 part is loaded into
// registers half a row at a time (j = 4h..4h+3: 16 registers plus the two scales that half needs)
// so the kernel can dequantize one half while a wgmma runs and keep only 18 registers in flight.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace flashmla_sm90 {

constexpr int kFp8RowBytes = 656;
constexpr int kFp8ScaleOffset = 512;
constexpr int kFp8RopeOffset = 528;

__device__ __forceinline__ uint32_t dequant_fp8x2(uint32_t two_e4m3, float scale) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two_e4m3), __NV_E4M3);
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * scale, f.y * scale);
  return *reinterpret_cast<const uint32_t*>(&b);
}

// Half a row's fp8 payload, in flight between a global load and a dequantizing shared store.
struct Fp8HalfRow {
  uint4 raw[4];
  float2 scale;  // scales 2h and 2h + 1

  // Loads half `h` of this thread's chunks of `row` (!valid: a missing key, loaded as zeros so the
  // tile holds finite values that the key mask then removes).
  __device__ __forceinline__ void load(const uint8_t* row, bool valid, int chunk0, int h) {
    if (!valid) {
      CUTE_UNROLL
      for (int i = 0; i < 4; ++i) raw[i] = make_uint4(0, 0, 0, 0);
      scale = make_float2(0.f, 0.f);
      return;
    }
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) {
      raw[i] = __ldg(reinterpret_cast<const uint4*>(row + 16 * (chunk0 + 4 * (4 * h + i))));
    }
    scale = __ldg(reinterpret_cast<const float2*>(row + kFp8ScaleOffset) + h);
  }

  // Writes the dequantized half into the bf16 tile: fp8 chunk c becomes bf16 chunks 2c and 2c + 1,
  // i.e. 64-column slab j = 4h + i at units (2 chunk0) ^ (row % 8) and (2 chunk0 + 1) ^ (row % 8).
  __device__ __forceinline__ void store(void* smem_tile, int row, int chunk0, int h) const {
    char* tile = static_cast<char*>(smem_tile) + row * 128;
    char* even = tile + (((2 * chunk0) ^ (row & 7)) << 4);
    char* odd = tile + (((2 * chunk0 + 1) ^ (row & 7)) << 4);
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) {
      const float s = i < 2 ? scale.x : scale.y;
      const uint32_t w[4] = {raw[i].x, raw[i].y, raw[i].z, raw[i].w};
      uint4 lo, hi;
      lo.x = dequant_fp8x2(w[0] & 0xffff, s);
      lo.y = dequant_fp8x2(w[0] >> 16, s);
      lo.z = dequant_fp8x2(w[1] & 0xffff, s);
      lo.w = dequant_fp8x2(w[1] >> 16, s);
      hi.x = dequant_fp8x2(w[2] & 0xffff, s);
      hi.y = dequant_fp8x2(w[2] >> 16, s);
      hi.z = dequant_fp8x2(w[3] & 0xffff, s);
      hi.w = dequant_fp8x2(w[3] >> 16, s);
      const int slab = (4 * h + i) * (64 * 128);
      *reinterpret_cast<uint4*>(even + slab) = lo;
      *reinterpret_cast<uint4*>(odd + slab) = hi;
    }
  }
};

// One bulk L2 prefetch per cache row (656 bytes), by the row's first thread; a missing row (-1
// source -> the cache base) is harmless to prefetch.
__device__ __forceinline__ void fp8_prefetch_l2(const uint8_t* row, int chunk0) {
  if (chunk0 == 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(row), "n"(kFp8RowBytes));
}
// The same by the row's 4 threads (q = chunk0), one 128-byte line prefetch each for bytes 128 q,
// 128 (q + 4) (q < 2) and the row's last byte (q == 2): every line the unaligned 656-byte row touches.
// For the producer warpgroup of fp8_decode.cuh: the bulk form takes a uniform operand, so ptxas
// loops over a warp's 8 rows; per-thread lines measured 1.7-2.5 % faster on v32-h64 / v32-h16.
__device__ __forceinline__ void fp8_prefetch_l2_lines(const uint8_t* row, int chunk0) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row + 128 * chunk0));
  if (chunk0 < 2) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row + 128 * (chunk0 + 4)));
  if (chunk0 == 2) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row + kFp8RowBytes - 1));
}

// cp.async of this thread's two RoPE chunks into slab 8 (bf16 dims 512..575) of the tile, zero-filled
// for a missing key (`src_row` must still be a mapped address then).
__device__ __forceinline__ void load_rope_async(void* smem_tile, int row, int chunk0, const uint8_t* src_row,
                                                bool valid) {
  const uint32_t tile = static_cast<uint32_t>(__cvta_generic_to_shared(smem_tile)) + 8 * (64 * 128) + row * 128;
  const int src_bytes = valid ? 16 : 0;
  const uint8_t* from = src_row + kFp8RopeOffset + 16 * chunk0;
  CUTE_UNROLL
  for (int i = 0; i < 2; ++i) {
    const uint32_t dst = tile + (((chunk0 + 4 * i) ^ (row & 7)) << 4);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(from + 64 * i), "r"(src_bytes));
  }
}

}  // namespace flashmla_sm90
