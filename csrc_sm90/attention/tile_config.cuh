// Shared-memory layouts, wgmma shapes and shared storage of the attention kernels' 64-row x 64-token tiles.
#pragma once

#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>

#include "../common/params.h"

namespace flashmla_sm90 {

using namespace cute;

template <typename Element, int kD>
struct AttentionConfig {  // shared by the dense (paged) and sparse (indexed) forms
  using SmemLayoutQ =
      decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Int<kTileRows>, Int<kD>>{}));
  using SmemLayoutK =
      decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Int<kTileTokens>, Int<kD>>{}));
  using SmemLayoutP =
      decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Int<kTileRows>, Int<kTileTokens>>{}));
  // (dim, token) view of a KV tile: V^T as an MN-major B operand
  using SmemLayoutVt =
      decltype(composition(SmemLayoutK{}, make_layout(Shape<Int<kD>, Int<kTileTokens>>{}, GenRowMajor{})));
  using TiledMmaS = decltype(make_tiled_mma(SM90::GMMA::ss_op_selector<
      Element, Element, float, Shape<_64, _32, Int<kD>>, GMMA::Major::K, GMMA::Major::K>()));
  using TiledMmaO = decltype(make_tiled_mma(SM90::GMMA::ss_op_selector<
      Element, Element, float, Shape<_64, _256, _64>, GMMA::Major::K, GMMA::Major::MN>()));

  struct SharedStorage {
    alignas(1024) Element q[cosize_v<SmemLayoutQ>];
    alignas(1024) Element k[2][cosize_v<SmemLayoutK>];
    alignas(1024) Element p[cosize_v<SmemLayoutP>];
    float row_max[2][kTileRows];
    float row_sum[2][kTileRows];
    uint8_t key_valid[2][kTileTokens];  // sparse: which keys of each KV buffer are real
    // dense with TMA: the tile of each KV buffer has landed (decode_seesaw.cuh: slab group g of buffer b, 2b + g)
    alignas(8) uint64_t kv_full[4];
    uint64_t hand_off[4];  // decode_seesaw.cuh: the warpgroups' hand-offs
    // seesaw: the current request's last visible key per query row, end of this CTA's keys, last real
    // tile, the first row's last key (read where used: registers are at their limit through the loop)
    int row_last_key[kTileRows];
    int end_token, tile_real, min_last_key;
  };
  static constexpr int kThreads = 256;
  static constexpr int kSmemBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an sm_90 CTA may have");
};

// The CTA's SharedStorage in dynamic shared memory, 1024-byte aligned (swizzle-128B atoms). The pointer is
// advanced from the shared array itself: one made from an integer loses its address space, and every
// access through it becomes a generic ld/st (each with an address-space check).
template <class Storage>
__device__ __forceinline__ Storage& shared_storage(char* smem_raw) {
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  return *reinterpret_cast<Storage*>(smem_raw + ((1024u - (base & 1023u)) & 1023u));
}

// The work of one CTA of a launch_tiled grid: its 64-row query tile, KV head and schedule part (index).
struct TiledCta {
  int m_tile, kvh;
  uint32_t part;
};
__device__ __forceinline__ TiledCta tiled_cta(const AttentionParams& p) {
  const int m_tiles = (p.rows + kTileRows - 1) / kTileRows;
  return {int(blockIdx.x % m_tiles), int((blockIdx.x / m_tiles) % p.h_kv), blockIdx.x / m_tiles / p.h_kv};
}

// Where request req's output goes: its partial-output slot (in this part, or its first) and its number of
// splits (one: the kernel finishes the output itself).
struct RequestSplit {
  int slot, n_splits;
};
__device__ __forceinline__ RequestSplit request_split(const AttentionParams& p, const SchedulePart& part, int req) {
  const int first_split = p.num_splits[req];
  const int n_splits = p.num_splits[req + 1] - first_split;
  return {req == part.begin_req ? part.begin_slot : first_split, n_splits};
}

// Keys request req attends in a sparse op: topk, cut by its topk_length when given.
__device__ __forceinline__ int sparse_key_count(const AttentionParams& p, int req) {
  return p.topk_length != nullptr ? max(0, min(p.topk_length[req], p.topk)) : p.topk;
}

// Launches an attention kernel of configuration Cfg: one CTA per (schedule part, KV head, 64-row query
// tile), the m-tile fastest (tiled_cta decodes it).
template <class Cfg, class Kernel>
cudaError_t launch_tiled(Kernel kernel, const AttentionParams& p, int num_parts, cudaStream_t stream) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int64_t ctas = int64_t((p.rows + kTileRows - 1) / kTileRows) * p.h_kv * num_parts;
  if (ctas > 0x7fffffff) return cudaErrorInvalidConfiguration;
  kernel<<<dim3(unsigned(ctas)), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace flashmla_sm90
