// Dense MLA decode for sm_90a over a paged cache whose 64-token tiles come by TMA (page_size a multiple
// of 64) when a KV head has an even number of 64-row query tiles (h_q * s_q / h_kv > 64, e.g. 128 heads):
// kernel.cuh's tiling and thread roles, the two CTAs of a query-tile pair in a cluster sharing every KV
// tile by TMA multicast, and the next tile's Q K^T issued under this tile's P V.
//
// Why a cluster: with one tile in flight per CTA the tile time is set by how long a 72 KB tile takes to
// land, and that grows with the load on L2 (benchmarks/micro/cp_async_ingest.cu: 1.8 us per tile when
// half the SMs stream, 3.2 us when all do; ncu on h128-8k: tensor pipe 47 % busy). The two query tiles
// of a KV head read the same KV tiles: each CTA of the pair issues half of a tile's 64-column slabs
// (even or odd) with multicast to both, so L2 serves every tile once instead of twice. Each CTA's full
// barrier expects the whole tile; a buffer is refilled once both CTAs have released it (an empty
// barrier per buffer, arrived at by thread 0 of each CTA, the peer's remotely).
//
// Tiling and roles as in kernel.cuh: one CTA computes 64 query rows of one KV head; Q (64 x D) and two
// KV tiles (64 x D) in shared memory, swizzle-128B, K-major, V the transposed view of a KV tile; two
// warpgroups, warpgroup w holds O[:, 256w, 256w + 256) and computes S for tokens [32w, 32w + 32) of a
// tile; row maxima are exchanged through shared memory; P (16-bit) goes through shared memory.
//
// Pipeline, per tile t in buffer t % 2 (tile t + 1 already in the other buffer):
//   wait S(t) | softmax(t): mask, row maxima exchanged, O rescaled, P(t) stored | issue P(t) V(t)
//   | wait for tile t + 1 to land, issue S(t + 1) = Q K(t + 1)^T | wait P(t) V(t) | CTA barrier:
//   buffer t % 2 and P are free | thread 0 issues tile t + 2's boxes into buffer t % 2
// so the tensor cores run S(t + 1) right behind P(t) V(t) instead of idling through the barrier, the
// loop top and the next tile's issue. The price is the load lead: tile t + 2's boxes go out once
// P(t) V(t) has completed and must land by the end of softmax(t + 1) (about S + softmax, ~60 % of a tile).
// Measured against kernel.cuh's loop: docs/benchmarks/sm90-dense-decode.md.
// The last tile has no successor: its stand-in S(t + 1) is a GEMM on tile t itself, whose result is
// never read, so that every path has the same wgmma sequence (ptxas serializes the wgmma otherwise).
// Rows past the length come with the page: their value dims are zeroed once the tile has landed (their
// scores are masked by position), so NaN in unused slots cannot reach P V.
#pragma once

#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "../common/device_utils.cuh"
#include "../common/params.h"
#include "epilogue.cuh"
#include "tile_config.cuh"
#include "tile_copy.cuh"

namespace flashmla_sm90 {

using namespace cute;

template <typename Element, int kD>
__global__ void __launch_bounds__(256, 1) mla_decode_tma_kernel(const __grid_constant__ AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = AttentionConfig<Element, kD>;
  using SmemLayoutK = typename Cfg::SmemLayoutK;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  constexpr float kNegInf = -INFINITY;
  constexpr int kSlabs = kD / 64;
  constexpr int kBarSoftmax = 1, kBarTail = 2, kBarEpilogue = 3;

  extern __shared__ char smem_raw[];
  auto& ss = *reinterpret_cast<typename Cfg::SharedStorage*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));

  const int tid = threadIdx.x, wg = tid / 128, wg_tid = tid % 128, lane = tid % 32;
  const int m_tiles = (p.rows + kTileRows - 1) / kTileRows;
  const int m_tile = blockIdx.x % m_tiles, kvh = (blockIdx.x / m_tiles) % p.h_kv;
  const SchedulePart part = p.schedule[blockIdx.x / m_tiles / p.h_kv];
  if (part.end_req < part.begin_req) return;  // both CTAs of the cluster share the part
  const int heads_per_kv = p.h_q / p.h_kv;
  const uint32_t cta_rank = cute::block_rank_in_cluster(), peer = cta_rank ^ 1u;
  if (tid == 0) {
    CUTE_UNROLL
    for (int b = 0; b < 2; ++b) {
      Barrier::init(&ss.kv_full[b], 1);
      EmptyBarrier::init(&ss.kv_empty[b], 2);
    }
    cutlass::arch::fence_barrier_init();
  }
  cute::cluster_sync();  // the peer's barriers exist before any multicast or remote arrive
  uint32_t kv_phase = 0;  // bit b: the parity of buffer b's next fill
  // thread 0: per buffer b, bit b says it has been filled before and bit 2 + b is the parity of the
  // release to wait for before its next fill (the same history in both CTAs)
  uint32_t fill_state = 0;

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Cfg::SmemLayoutQ{});
  Tensor sP = make_tensor(make_smem_ptr(ss.p), typename Cfg::SmemLayoutP{});
  typename Cfg::TiledMmaS mma_s;
  typename Cfg::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(wg_tid);
  auto thr_o = mma_o.get_thread_slice(wg_tid);
  Tensor tSrQ = thr_s.partition_fragment_A(sQ);
  Tensor tOrP = thr_o.partition_fragment_A(sP);
  Tensor tSrS = partition_fragment_C(mma_s, Shape<_64, _32>{});
  Tensor tOrO = partition_fragment_C(mma_o, Shape<_64, _256>{});
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<_64, _32>{}));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<_64, _256>{}));
  Tensor tSsP = thr_s.partition_C(local_tile(sP, Shape<_64, _32>{}, make_coord(0, wg)));
  const int my_row0 = (wg_tid / 32) * 16 + lane / 4;  // wgmma C layout: rows my_row0, my_row0 + 8
  auto slot_of = [](int v) { return (v >> 1) & 1; };
  const int copy_row = tid / 4, copy_chunk0 = tid % 4;
  const Element* q = static_cast<const Element*>(p.q);

  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int seqlen = p.seqlens[req];
    const int n_tiles = (seqlen + kTileTokens - 1) / kTileTokens;
    const int tile_lo = req == part.begin_req ? part.begin_tile : 0;
    const int tile_hi = req == part.end_req ? min(part.end_tile, n_tiles) : n_tiles;
    const int first_split = p.num_splits[req];
    const int n_splits = p.num_splits[req + 1] - first_split;
    const int slot = req == part.begin_req ? part.begin_slot : first_split;

    // Tile `tile` into buffer `buf` of both CTAs (thread 0), once both have released the buffer's last
    // tile: this CTA's half of the 64 x 64 slab boxes, multicast; its barrier expects the whole tile.
    auto load_tile = [&](int tile, int buf) {
      const int token0 = tile * kTileTokens;
      const int page = p.block_table[req * p.bt_stride_b + token0 / p.page_size];
      if (fill_state & (1u << buf)) {
        EmptyBarrier::wait(&ss.kv_empty[buf], (fill_state >> (2 + buf)) & 1);
        fill_state ^= 4u << buf;
      }
      fill_state |= 1u << buf;
      Barrier::arrive_and_expect_tx(&ss.kv_full[buf], kSlabs * 64 * 128);
      for (int s = cta_rank; s < kSlabs; s += 2) {
        SM90_TMA_LOAD_MULTICAST_4D::copy(&p.kv_tma, &ss.kv_full[buf], uint16_t(0b11),
                                         uint64_t(TMA::CacheHintSm90::EVICT_NORMAL), ss.k[buf] + s * 64 * kTileTokens,
                                         s * 64, token0 % p.page_size, kvh, page);
      }
    };
    // Thread 0, once every warp of this CTA is done with buffer `buf`: tells both CTAs.
    auto release = [&](int buf) {
      EmptyBarrier::arrive(&ss.kv_empty[buf]);
      EmptyBarrier::arrive(&ss.kv_empty[buf], peer, 1);
    };
    if (tid == 0) {
      if (tile_lo < tile_hi) load_tile(tile_lo, 0);
      if (tile_lo + 1 < tile_hi) load_tile(tile_lo + 1, 1);
    }
    {  // Q tile by cp.async: rows past the problem's rows are zero
      const int grow = m_tile * kTileRows + copy_row;
      const bool valid = grow < p.rows;
      const Element* src = q;
      if (valid) {
        const int j = grow / heads_per_kv, h = kvh * heads_per_kv + grow % heads_per_kv;
        src = q + req * p.q_stride_b + j * p.q_stride_s + h * p.q_stride_h;
      }
      load_tile_row<kD * int(sizeof(Element)) / 16>(ss.q, copy_row, copy_chunk0, valid, src);
      cp_async_commit();
      cp_async_wait<0>();
      cutlass::arch::fence_view_async_shared();
      __syncthreads();
    }

    float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.f, 0.f};
    clear(tOrO);
    int last_key[2];  // bottom-right causal: query token j sees keys [0, seqlen - s_q + j]
    CUTE_UNROLL
    for (int k = 0; k < 2; ++k) {
      const int grow = m_tile * kTileRows + my_row0 + 8 * k;
      last_key[k] = p.causal ? min(seqlen - 1, seqlen - p.s_q + grow / heads_per_kv) : seqlen - 1;
    }

    // Waits for tile `tile` in buffer `buf`; rows past the length get their value dims zeroed.
    auto wait_tile = [&](int tile, int buf) {
      Barrier::wait(&ss.kv_full[buf], (kv_phase >> buf) & 1);
      kv_phase ^= 1u << buf;
      const int valid = seqlen - tile * kTileTokens;
      if (valid < kTileTokens) {
        if (copy_row >= valid) {
          char* row = reinterpret_cast<char*>(ss.k[buf]);
          CUTE_UNROLL
          for (int c = copy_chunk0; c < kHeadDimV * int(sizeof(Element)) / 16; c += 4) {
            *reinterpret_cast<uint4*>(row + swizzled_chunk_offset(copy_row, c)) = make_uint4(0, 0, 0, 0);
          }
        }
        cutlass::arch::fence_view_async_shared();
        named_barrier(kBarTail, 256);
      }
    };
    // S = Q K^T for this warpgroup's 32 tokens of the tile in buffer `buf`
    auto issue_qk = [&](int buf) {
      Tensor sK = make_tensor(make_smem_ptr(ss.k[buf]), SmemLayoutK{});
      Tensor tSrK = thr_s.partition_fragment_B(local_tile(sK, Shape<_32, Int<kD>>{}, make_coord(wg, 0)));
      mma_s.accumulate_ = GMMA::ScaleOut::Zero;
      warpgroup_fence_operand(tSrS);
      warpgroup_arrive();
      CUTE_UNROLL
      for (int kb = 0; kb < size<2>(tSrQ); ++kb) {
        cute::gemm(mma_s, tSrQ(_, _, kb), tSrK(_, _, kb), tSrS);
        mma_s.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();
    };

    if (tile_lo < tile_hi) {
      wait_tile(tile_lo, 0);
      issue_qk(0);
    }
    for (int tile = tile_lo; tile < tile_hi; ++tile) {
      const int buf = (tile - tile_lo) & 1;
      warpgroup_wait<0>();  // S(tile); P V of the last tile completed before the last barrier
      warpgroup_fence_operand(tSrS);

      // mask (length, causal), scale into log2 units, tile row maxima
      float tile_max[2] = {kNegInf, kNegInf};
      const int tile_token0 = tile * kTileTokens + wg * 32;
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); ++i) {
        const int token = tile_token0 + get<1>(tScS(i));
        const float s = token <= last_key[slot_of(i)] ? tSrS(i) * p.scale_log2 : kNegInf;
        tSrS(i) = s;
        tile_max[slot_of(i)] = fmaxf(tile_max[slot_of(i)], s);
      }
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) {
        tile_max[k] = quad_max(tile_max[k]);
        if (lane % 4 == 0) ss.row_max[wg][my_row0 + 8 * k] = tile_max[k];
      }
      named_barrier(kBarSoftmax, 256);
      float rescale[2], m_use[2];
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) {
        const int r = my_row0 + 8 * k;
        const float m_new = fmaxf(row_max[k], fmaxf(ss.row_max[0][r], ss.row_max[1][r]));
        rescale[k] = m_new == kNegInf ? 1.f : exp2f(row_max[k] - m_new);
        m_use[k] = m_new == kNegInf ? 0.f : m_new;
        row_max[k] = m_new;
        row_sum[k] *= rescale[k];
      }
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); i += 2) {  // adjacent accumulator values: adjacent columns
        const int k = slot_of(i);
        const float p0 = exp2f(tSrS(i) - m_use[k]), p1 = exp2f(tSrS(i + 1) - m_use[k]);
        row_sum[k] += p0 + p1;
        Element pair[2] = {Element(p0), Element(p1)};
        *reinterpret_cast<uint32_t*>(&tSsP(i)) = *reinterpret_cast<const uint32_t*>(pair);
      }
      if (rescale[0] != 1.f || rescale[1] != 1.f) {  // the running max rarely moves after a few tiles
        CUTE_UNROLL
        for (int i = 0; i < size(tOrO); ++i) tOrO(i) *= rescale[slot_of(i)];
      }
      cutlass::arch::fence_view_async_shared();  // P stores -> wgmma reads
      named_barrier(kBarSoftmax, 256);

      // O_w += P V_w, then S of the next tile behind it
      Tensor sVt = make_tensor(make_smem_ptr(ss.k[buf]), typename Cfg::SmemLayoutVt{});
      Tensor tOrV = thr_o.partition_fragment_B(local_tile(sVt, Shape<_256, _64>{}, make_coord(wg, 0)));
      warpgroup_fence_operand(tOrO);
      warpgroup_arrive();
      CUTE_UNROLL
      for (int kb = 0; kb < size<2>(tOrP); ++kb) cute::gemm(mma_o, tOrP(_, _, kb), tOrV(_, _, kb), tOrO);
      warpgroup_commit_batch();
      const bool has_next = tile + 1 < tile_hi;
      if (has_next) wait_tile(tile + 1, buf ^ 1);
      issue_qk(has_next ? buf ^ 1 : buf);  // the last tile's is a stand-in, never read
      warpgroup_wait<1>();  // P V
      warpgroup_fence_operand(tOrO);
      // every warp's P V of this tile is done: its buffer (and P) may be overwritten
      __syncthreads();
      if (tid == 0 && has_next) {  // (the last tile's buffer is read by the stand-in until the epilogue)
        release(buf);
        if (tile + 2 < tile_hi) load_tile(tile + 2, buf);
      }
    }
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);

    store_attention_output<Element, false>(p, ss.row_sum, kBarEpilogue, tOrO, tOcO, row_max, row_sum, m_tile, kvh,
                                           req, slot, n_splits);
    __syncthreads();  // Q tile and row_sum are reused by the next request
    if (tid == 0 && tile_lo < tile_hi) release((tile_hi - 1 - tile_lo) & 1);
  }
  cute::cluster_sync();  // no CTA leaves while its peer may still write its shared memory
#endif
}

// Needs an even number of 64-row query tiles per KV head (CTAs (2i, 2i + 1) form a cluster).
template <typename Element, int kD>
cudaError_t launch_decode_tma(const AttentionParams& p, int num_parts, cudaStream_t stream) {
  using Cfg = AttentionConfig<Element, kD>;
  auto kernel = mla_decode_tma_kernel<Element, kD>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int m_tiles = (p.rows + kTileRows - 1) / kTileRows;
  if (m_tiles % 2 != 0) return cudaErrorInvalidValue;
  const int64_t ctas = int64_t(m_tiles) * p.h_kv * num_parts;
  if (ctas > 0x7fffffff) return cudaErrorInvalidConfiguration;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(unsigned(ctas));
  config.blockDim = dim3(Cfg::kThreads);
  config.dynamicSmemBytes = Cfg::kSmemBytes;
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = 2;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  err = cudaLaunchKernelEx(&config, kernel, p);
  return err != cudaSuccess ? err : cudaGetLastError();
}

}  // namespace flashmla_sm90
