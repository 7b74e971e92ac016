// The fp8_v32 cache row (656 bytes, DeepSeek-V3.2) turned into a bf16 row of a swizzled KV tile.
//
//   bytes 0..511    512 x e4m3 (latent), scale k covers dims [128k, 128k + 128)
//   bytes 512..527  4 x float32 scales
//   bytes 528..655  64 x bf16 (RoPE), copied as is
//
// x[d] = bf16(float(e4m3[d]) * scale[d / 128]): e4m3 -> f16 is exact (hardware cvt), f16 -> f32
// exact, one float32 multiply, one round to bf16 — bit for bit what the contract specifies.
//
// Who does what. A KV tile's 64 rows are two row parts of 32; the 8 threads of a part's row
// (thread t: row t / 8, `part8` = t % 8) own its 16-byte fp8 chunks c = part8 + 8j (j = 0..3, dims
// 16c..16c+15, scale j), held in registers between their load and their dequantizing store (16
// registers plus the 4 scales), so the kernel dequantizes a part while a wgmma runs. The RoPE part
// goes by cp.async with the tile's bf16 gather mapping (4 threads per row, chunks chunk0 and
// chunk0 + 4). With a 2-CTA cluster (h_q > 64: the two CTAs hold the same keys for different heads)
// each CTA makes one part and writes it into both CTAs' tiles (distributed shared memory): half
// the dequantization per CTA.
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

__device__ __forceinline__ void store_shared_v4(uint32_t addr, uint4 v) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w));
}
__device__ __forceinline__ void store_cluster_v4(uint32_t addr, uint4 v) {
  asm volatile("st.shared::cluster.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w));
}
// The address of the same shared-memory location in CTA `rank` of this cluster.
__device__ __forceinline__ uint32_t peer_shared_address(uint32_t addr, int rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}

// One thread's share of a row part, in flight between its global load and its dequantizing store.
struct Fp8RowPart {
  uint4 raw[4];
  float4 scale;

  // !valid: a missing key, loaded as zeros so the tile holds finite values the key mask removes.
  __device__ __forceinline__ void load(const uint8_t* row, bool valid, int part8) {
    if (!valid) {
      CUTE_UNROLL
      for (int j = 0; j < 4; ++j) raw[j] = make_uint4(0, 0, 0, 0);
      scale = make_float4(0.f, 0.f, 0.f, 0.f);
      return;
    }
    CUTE_UNROLL
    for (int j = 0; j < 4; ++j) raw[j] = __ldg(reinterpret_cast<const uint4*>(row + 16 * (part8 + 8 * j)));
    scale = __ldg(reinterpret_cast<const float4*>(row + kFp8ScaleOffset));
  }

  // Dequantizes into row `row` of the tile at shared address `tile` (swizzle-128B, K-major, slabs of
  // 64 rows x 128 B) and, when peer_tile != 0, of the peer CTA's tile too. fp8 chunk c becomes bf16
  // chunks 2c and 2c + 1: slab c / 4, units 2 (c % 4) and 2 (c % 4) + 1, XOR-ed with row % 8.
  __device__ __forceinline__ void store(uint32_t tile, uint32_t peer_tile, int row, int part8) const {
    const uint32_t unit_even = ((2 * (part8 & 3)) ^ (row & 7)) << 4, unit_odd = ((2 * (part8 & 3) + 1) ^ (row & 7)) << 4;
    CUTE_UNROLL
    for (int j = 0; j < 4; ++j) {
      const float s = j == 0 ? scale.x : j == 1 ? scale.y : j == 2 ? scale.z : scale.w;
      uint4 lo, hi;
      lo.x = dequant_fp8x2(raw[j].x & 0xffff, s);
      lo.y = dequant_fp8x2(raw[j].x >> 16, s);
      lo.z = dequant_fp8x2(raw[j].y & 0xffff, s);
      lo.w = dequant_fp8x2(raw[j].y >> 16, s);
      hi.x = dequant_fp8x2(raw[j].z & 0xffff, s);
      hi.y = dequant_fp8x2(raw[j].z >> 16, s);
      hi.z = dequant_fp8x2(raw[j].w & 0xffff, s);
      hi.w = dequant_fp8x2(raw[j].w >> 16, s);
      const uint32_t at = ((part8 + 8 * j) >> 2) * (64 * 128) + row * 128;
      store_shared_v4(tile + at + unit_even, lo);
      store_shared_v4(tile + at + unit_odd, hi);
      if (peer_tile != 0) {
        store_cluster_v4(peer_tile + at + unit_even, lo);
        store_cluster_v4(peer_tile + at + unit_odd, hi);
      }
    }
  }
};

// One bulk L2 prefetch per cache row (656 bytes), by the row's first thread; a missing row (-1
// source -> the cache base) is harmless to prefetch.
__device__ __forceinline__ void fp8_prefetch_l2(const uint8_t* row, int chunk0) {
  if (chunk0 == 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(row), "n"(kFp8RowBytes));
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
