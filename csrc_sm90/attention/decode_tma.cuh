// Dense MLA decode for sm_90a over a paged cache whose 64-token tiles come by TMA (page_size a multiple
// of 64): kernel.cuh's tiling and thread roles, with the next tile's Q K^T issued under this tile's P V.
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
  if (part.end_req < part.begin_req) return;
  const int heads_per_kv = p.h_q / p.h_kv;
  if (tid == 0) {
    Barrier::init(&ss.kv_full[0], 1);
    Barrier::init(&ss.kv_full[1], 1);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();
  uint32_t kv_phase = 0;  // bit b: the parity of buffer b's next fill

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

    // Tile `tile` into buffer `buf` (thread 0): one 64 x 64 box per slab on the buffer's barrier.
    auto load_tile = [&](int tile, int buf) {
      const int token0 = tile * kTileTokens;
      const int page = p.block_table[req * p.bt_stride_b + token0 / p.page_size];
      Barrier::arrive_and_expect_tx(&ss.kv_full[buf], kSlabs * 64 * 128);
      CUTE_UNROLL
      for (int s = 0; s < kSlabs; ++s) {
        SM90_TMA_LOAD_4D::copy(&p.kv_tma, &ss.kv_full[buf], uint64_t(TMA::CacheHintSm90::EVICT_NORMAL),
                               ss.k[buf] + s * 64 * kTileTokens, s * 64, token0 % p.page_size, kvh, page);
      }
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
      if (tid == 0 && tile + 2 < tile_hi) load_tile(tile + 2, buf);
    }
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);

    store_attention_output<Element, false>(p, ss.row_sum, kBarEpilogue, tOrO, tOcO, row_max, row_sum, m_tile, kvh,
                                           req, slot, n_splits);
    __syncthreads();  // Q tile and row_sum are reused by the next request
  }
#endif
}

template <typename Element, int kD>
cudaError_t launch_decode_tma(const AttentionParams& p, int num_parts, cudaStream_t stream) {
  using Cfg = AttentionConfig<Element, kD>;
  auto kernel = mla_decode_tma_kernel<Element, kD>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int64_t ctas = int64_t((p.rows + kTileRows - 1) / kTileRows) * p.h_kv * num_parts;
  if (ctas > 0x7fffffff) return cudaErrorInvalidConfiguration;
  kernel<<<dim3(unsigned(ctas)), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace flashmla_sm90
