// Dense MLA decode for sm_90a, d_qk 576, over a paged cache whose 64-token tiles come by TMA (page_size a
// multiple of 64), used for the compute-bound shapes (the binding says when; FLASHMLA_SM90_SEESAW=0 turns
// it off): the "seesaw" schedule, in which each warpgroup computes the scores of its own whole tile, so
// one warpgroup's softmax runs while the other's GEMMs keep the tensor cores busy.
//
// Tiling. One CTA computes 64 query rows of one KV head (as kernel.cuh) against its tiles in pairs: tile
// A in buffer 0, tile B in buffer 1 (Q 72 KB + two 72 KB tiles, swizzle-128B, K-major; V is the
// transposed view of a tile's first 512 dims). Warpgroup w owns O[:, 256w, 256w + 256).
//
// Per pair (m: the running row maxima, the same in both warpgroups):
//   WG0: S_A = Q K_A^T (64 x 64 x 576: N = 64 keeps the operands' shared-memory reads within the math)
//        | softmax A: m_A = max(m, rowmax S_A), P_A -> A's RoPE slab | O_0 = O_0 2^(m - m_A) + P_A V_A,0
//        | wait for P_B | O_0 = O_0 2^(m_A - m_B) + P_B V_B,0 | S of the next A
//   WG1: S_B = Q K_B^T | wait for P_A | O_1 = O_1 2^(m - m_A) + P_A V_A,1 issued, then (under it)
//        softmax B: m_B = max(m_A, rowmax S_B), P_B -> B's RoPE slab | O_1 = O_1 2^(m_A - m_B) + P_B V_B,1
// so softmax A overlaps S_B and softmax B overlaps both P_A V_A. A tile's RoPE slab (64 x 64 x 2 B) is
// read only by its own Q K^T and then holds its P (64 x 64, 16-bit) for both warpgroups' P V.
// Hand-offs: named barriers 1 (P_A and m_A ready) and 2 (P_B and m_B ready), both warpgroups syncing
// (measured as fast as arrive-only producers); non-aligned barrier.sync, since the warpgroups reach
// them from different instructions.
//
// Loads: thread 0 issues a tile's nine 64 x 64 boxes on its buffer's full barrier. A buffer is refilled
// with the tile two ahead once both warpgroups' P V of it has completed: the second warpgroup to say
// so issues the boxes (a shared counter), having read the page ahead. A request's tiles are padded to
// whole pairs: an odd last tile is followed by a phantom B, a copy of the last box whose keys are all
// masked and whose value dims are zeroed. Rows past the length come with the page: the warpgroup that
// computes a tile's S zeroes their value dims before its Q K^T (their scores are masked by position),
// so NaN in unused slots cannot reach P V.
// wgmma waits: every wait is wait<0> and each warpgroup runs its own loop, which ptxas needs to keep
// the wgmma pipelined (it serializes them on count-dependent waits across paths).
#pragma once

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/detail/helper_macros.hpp>

#include "../common/device_utils.cuh"
#include "../common/params.h"
#include "epilogue.cuh"
#include "seesaw_softmax.cuh"
#include "tile_config.cuh"
#include "tile_copy.cuh"
#include "wgmma_issue.cuh"

namespace flashmla_sm90 {

using namespace cute;

template <typename Element>
__global__ void __launch_bounds__(256, 1) mla_decode_seesaw_kernel(const __grid_constant__ AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kD = 576;
  using Cfg = AttentionConfig<Element, kD>;
  using TiledMmaS = decltype(make_tiled_mma(SM90::GMMA::ss_op_selector<
      Element, Element, float, Shape<_64, _64, Int<kD>>, GMMA::Major::K, GMMA::Major::K>()));
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr float kNegInf = -INFINITY;
  constexpr int kBarPa = 1, kBarPb = 2, kBarWarpgroup = 3 /* + wg */, kBarEpilogue = 5;
  constexpr int kRopeSlab = kHeadDimV * kTileTokens;  // element offset of a tile's RoPE slab
  static_assert(cosize_v<typename Cfg::SmemLayoutP> == kTileTokens * (kD - kHeadDimV), "P fills a RoPE slab");

  extern __shared__ char smem_raw[];
  auto& ss = shared_storage<typename Cfg::SharedStorage>(smem_raw);

  launch_dependent_grids();
  // wg broadcast from lane 0: ptxas then knows it is warp-uniform (the warpgroups run different wgmma
  // sequences; a divergent path would serialize them)
  const int tid = threadIdx.x, wg = __shfl_sync(0xffffffff, tid / 128, 0), wg_tid = tid % 128, lane = tid % 32;
  const TiledCta cta = tiled_cta(p);
  const int m_tile = cta.m_tile, kvh = cta.kvh;
  const SchedulePart part = p.schedule[cta.part];
  if (part.end_req < part.begin_req) return;
  const int heads_per_kv = p.h_q / p.h_kv;
  if (tid == 0) {
    FullBarrier::init(&ss.kv_full[0], 1);
    FullBarrier::init(&ss.kv_full[1], 1);
    ss.released[0] = ss.released[1] = 0;
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  TiledMmaS mma_s;
  typename Cfg::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(wg_tid);
  auto thr_o = mma_o.get_thread_slice(wg_tid);
  Tensor tSrS = partition_fragment_C(mma_s, Shape<_64, _64>{});
  Tensor tOrO = partition_fragment_C(mma_o, Shape<_64, _256>{});
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<_64, _64>{}));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<_64, _256>{}));
  const int my_row0 = (wg_tid / 32) * 16 + lane / 4;  // wgmma C layout: rows my_row0, my_row0 + 8
  auto slot_of = [](int v) { return (v >> 1) & 1; };
  auto tile_p = [&](int buf) { return make_tensor(make_smem_ptr(ss.k[buf] + kRopeSlab), typename Cfg::SmemLayoutP{}); };
  uint32_t kv_phase = 0;  // bit b: the parity of buffer b's next fill

  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int seqlen = p.seqlens[req];
    const int n_tiles = (seqlen + kTileTokens - 1) / kTileTokens;
    const int tile_lo = req == part.begin_req ? part.begin_tile : 0;
    const int tile_real = max(tile_lo, req == part.end_req ? min(part.end_tile, n_tiles) : n_tiles);
    const int tile_hi = tile_lo + ((tile_real - tile_lo + 1) & ~1);  // whole pairs (a phantom B at most)
    // Keys at or past end_token are never attended here (the phantom may hold the next split's keys).
    // These and the rows' causal limits go to shared memory, visible after the Q load's barrier.
    if (tid < kTileRows) {
      const int end_token = min(seqlen, tile_real * kTileTokens);
      const int grow = m_tile * kTileRows + tid;  // bottom-right causal: query token j sees keys [0, L - s_q + j]
      ss.row_last_key[tid] = min(end_token - 1, p.causal ? seqlen - p.s_q + grow / heads_per_kv : seqlen - 1);
      if (tid == 0) {
        ss.end_token = end_token;
        ss.tile_real = tile_real;
      }
    }
    auto buf_of = [&](int tile) { return (tile - tile_lo) & 1; };
    auto page_of = [&](int tile) {  // the phantom repeats the last real tile's box
      return p.block_table[req * p.bt_stride_b + min(tile, ss.tile_real - 1) * kTileTokens / p.page_size];
    };

    // Tile `tile` into its buffer (one thread): one 64 x 64 box per slab on the buffer's full barrier.
    auto produce = [&](int tile, int page) CUTLASS_LAMBDA_FUNC_INLINE {
      const int buf = buf_of(tile);
      load_tile_boxes<kD>(p, &ss.kv_full[buf], ss.k[buf], (min(tile, ss.tile_real - 1) * kTileTokens) % p.page_size,
                          kvh, page);
    };
    if (tid == 0) {
      for (int tile = tile_lo; tile < min(tile_hi, tile_lo + 2); ++tile) produce(tile, page_of(tile));
    }
    load_q_tile<kD>(p, heads_per_kv, ss.q, m_tile, kvh, req, tid);  // rows past the problem's rows are zero
    __syncthreads();

    float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.f, 0.f};
    clear(tOrO);

    // S = Q K^T of `tile` (this warpgroup) once it has landed; rows past the length get zero value dims.
    auto issue_qk = [&](int tile) CUTLASS_LAMBDA_FUNC_INLINE {
      const int buf = buf_of(tile);
      FullBarrier::wait(&ss.kv_full[buf], (kv_phase >> buf) & 1);
      kv_phase ^= 1u << buf;
      const int valid = max(0, ss.end_token - tile * kTileTokens);
      if (valid < kTileTokens) {
        char* rows = reinterpret_cast<char*>(ss.k[buf]);
        constexpr int kValueChunks = kHeadDimV * int(sizeof(Element)) / 16;
        for (int i = wg_tid; i < (kTileTokens - valid) * kValueChunks; i += 128) {
          const int row = valid + i / kValueChunks, chunk = i % kValueChunks;
          *reinterpret_cast<uint4*>(rows + swizzled_chunk_offset(row, chunk)) = make_uint4(0, 0, 0, 0);
        }
        cutlass::arch::fence_view_async_shared();
      }
      // Unconditional, so both warpgroups pass the same number of barriers per pair: racecheck pairs the
      // warps' barrier arrivals by count, and a warpgroup one barrier ahead looks unsynchronized to it.
      named_barrier_unaligned(kBarWarpgroup + wg, 128);
      // Q's 36 operand descriptors are made here from an opaque pointer: made once outside the loop,
      // they would stay live in 72 registers (ptxas spilled with them)
      Element* q_smem = ss.q;
      asm volatile("" : "+l"(q_smem));
      Tensor tSrQ = thr_s.partition_fragment_A(make_tensor(make_smem_ptr(q_smem), typename Cfg::SmemLayoutQ{}));
      Tensor sK = make_tensor(make_smem_ptr(ss.k[buf]), typename Cfg::SmemLayoutK{});
      Tensor tSrK = thr_s.partition_fragment_B(sK);
      issue_wgmma(mma_s, tSrQ, tSrK, tSrS, true);
    };
    // Once S is in registers: mask (length, causal), scale into log2 units, row maxima of the tile.
    auto mask_scores = [&](int tile, float (&tile_max)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
      warpgroup_fence_operand(tSrS);
      tile_max[0] = tile_max[1] = kNegInf;
      const int last_key[2] = {ss.row_last_key[my_row0], ss.row_last_key[my_row0 + 8]};
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); ++i) {
        const int token = tile * kTileTokens + get<1>(tScS(i));
        const float s = token <= last_key[slot_of(i)] ? tSrS(i) * p.scale_log2 : kNegInf;
        tSrS(i) = s;
        tile_max[slot_of(i)] = fmaxf(tile_max[slot_of(i)], s);
      }
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) tile_max[k] = quad_max(tile_max[k]);
    };
    // P = 2^(S - m) into the tile's RoPE slab; adds this thread's share of the row sums to sum.
    auto write_p = [&](int tile, const float (&m)[2], float (&sum)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
      seesaw_write_p<Element>(tSrS, thr_s.partition_C(tile_p(buf_of(tile))), m, sum);
    };
    // This warpgroup's O slice and row sums from maxima `from` to `to` (to >= from).
    auto rescale = [&](const float (&from)[2], const float (&to)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
      seesaw_rescale(tOrO, row_sum, from, to);
    };
    // O_wg += P V_wg of `tile`
    auto issue_pv = [&](int tile) CUTLASS_LAMBDA_FUNC_INLINE {
      const int buf = buf_of(tile);
      Tensor tOrP = thr_o.partition_fragment_A(tile_p(buf));
      Tensor sVt = make_tensor(make_smem_ptr(ss.k[buf]), typename Cfg::SmemLayoutVt{});
      Tensor tOrV = thr_o.partition_fragment_B(local_tile(sVt, Shape<_256, _64>{}, make_coord(wg, 0)));
      issue_wgmma(mma_o, tOrP, tOrV, tOrO, false);
    };
    auto wait_pv = [&] {
      warpgroup_wait<0>();
      warpgroup_fence_operand(tOrO);
    };
    // This warpgroup is done with `tile` (its P V completed): the second warpgroup to say so refills the
    // buffer with tile + 2, whose page it read ahead.
    auto release = [&](int tile, int refill_page) CUTLASS_LAMBDA_FUNC_INLINE {
      if (wg_tid == 0) {
        const int buf = buf_of(tile);
        __threadfence_block();
        if (atomicAdd(&ss.released[buf], 1) == 1) {
          ss.released[buf] = 0;
          if (tile + 2 < tile_hi) produce(tile + 2, refill_page);
        }
      }
      __syncwarp();
    };
    auto read_page_ahead = [&](int tile) { return wg_tid == 0 && tile + 2 < tile_hi ? page_of(tile + 2) : 0; };
    auto load_max = [&](const float* from, float (&m)[2]) { seesaw_load_max(from, my_row0, m); };
    auto store_max = [&](float* to, const float (&m)[2]) { seesaw_store_max(to, my_row0, lane, m); };
    float* max_a = ss.row_max[0];
    float* max_b = ss.row_max[1];

    // Each pair ends with both P V complete in both warpgroups, so a buffer's release never waits on the
    // other buffer's refill (the next pair's S of A is issued after B's release).
    if (tile_lo < tile_hi) {
      if (wg == 0) {
        issue_qk(tile_lo);
        for (int a = tile_lo; a < tile_hi; a += 2) {
          const int page_a = read_page_ahead(a), page_b = read_page_ahead(a + 1);
          float tile_max[2], m_a[2], m_b[2], sum_p[2] = {0.f, 0.f};
          warpgroup_wait<0>();  // S_A
          mask_scores(a, tile_max);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_a[k] = fmaxf(row_max[k], tile_max[k]);
          write_p(a, m_a, sum_p);
          store_max(max_a, m_a);
          named_barrier_unaligned(kBarPa, 256);
          rescale(row_max, m_a);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) row_sum[k] += sum_p[k];
          issue_pv(a);
          named_barrier_unaligned(kBarPb, 256);
          load_max(max_b, m_b);
          wait_pv();
          release(a, page_a);
          rescale(m_a, m_b);
          issue_pv(a + 1);
          wait_pv();
          release(a + 1, page_b);
          if (a + 2 < tile_hi) issue_qk(a + 2);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) row_max[k] = m_b[k];
        }
      } else {
        for (int a = tile_lo; a < tile_hi; a += 2) {
          const int b = a + 1;
          const int page_a = read_page_ahead(a), page_b = read_page_ahead(b);
          float tile_max[2], m_a[2], m_b[2], sum_p[2] = {0.f, 0.f};
          issue_qk(b);
          warpgroup_wait<0>();  // S_B
          mask_scores(b, tile_max);
          named_barrier_unaligned(kBarPa, 256);
          load_max(max_a, m_a);
          rescale(row_max, m_a);
          issue_pv(a);
          // softmax B under both warpgroups' P_A V_A
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_b[k] = fmaxf(m_a[k], tile_max[k]);
          write_p(b, m_b, sum_p);
          store_max(max_b, m_b);
          // m_A re-read rather than held through softmax B (registers), and before this hand-off: past it,
          // WG0 may write the next pair's
          load_max(max_a, m_a);
          named_barrier_unaligned(kBarPb, 256);
          wait_pv();
          rescale(m_a, m_b);
          release(a, page_a);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) {
            row_sum[k] += sum_p[k];
            row_max[k] = m_b[k];
          }
          issue_pv(b);
          wait_pv();
          release(b, page_b);
        }
      }
      // nothing is in flight here; saying so lets ptxas reuse S's registers in the epilogue
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);
    }

    // (read here rather than held through the loop: registers are at the limit)
    const RequestSplit split = request_split(p, part, req);
    store_attention_output<Element, false>(p, ss.row_sum, kBarEpilogue, tOrO, tOcO, row_max, row_sum,
                                           int(blockIdx.x) % ((p.rows + kTileRows - 1) / kTileRows),
                                           int(blockIdx.x) / ((p.rows + kTileRows - 1) / kTileRows) % p.h_kv, req,
                                           split.slot, split.n_splits);
    __syncthreads();  // Q tile and row_sum are reused by the next request
  }
#endif
}

template <typename Element>
cudaError_t launch_decode_seesaw(const AttentionParams& p, int num_parts, cudaStream_t stream) {
  return launch_tiled<AttentionConfig<Element, 576>>(mla_decode_seesaw_kernel<Element>, p, num_parts, stream);
}

}  // namespace flashmla_sm90
