// Dense MLA decode for sm_90a, d_qk 576, over a paged cache whose 64-token tiles come by TMA (page_size a
// multiple of 64), used for the compute-bound shapes (the binding says when; FLASHMLA_SM90_SEESAW=0 turns
// it off): the "seesaw" schedule, in which each warpgroup computes the scores of its own whole tile, so
// one warpgroup's softmax runs while the other's GEMMs keep the tensor cores busy, here in FlashMLA's
// published order (written for this codebase): GEMMs staggered and tiles refilled by slab group.
//
// Tiling. One CTA computes 64 query rows of one KV head against its tiles in pairs: tile A in buffer 0,
// tile B in buffer 1 (Q 72 KB + two 72 KB tiles of nine 64-dim slabs, swizzle-128B, K-major; V is the
// transposed view of a tile's first 512 dims). Warpgroup w owns O[:, 256w, 256w + 256): WG0 reads V's
// slabs 0-3 (V_L), WG1 slabs 4-7 (V_R). WG0 computes S of every A, WG1 of every B (64 x 64 x 576).
//
// Per pair (m: the running row maxima; P of a tile in registers for its own warpgroup's P V, in the tile's
// RoPE slab for the other's):
//   WG0: softmax A (m_A = max(m, rowmax S_A)) -> [m_A ready] | O_0 = O_0 2^(m - m_A) + P_A V_A,L (P_A from
//        registers) | refill A's slabs 0-3 | [m_B ready] P_A 2^(m_A - m_B) -> A's RoPE slab -> [P_A ready] |
//        O_0 = O_0 2^(m_A - m_B) | [WG1 issued] O_0 += P_B V_B,L, then S of the next A by slab group (slabs
//        0-3 first), refilling B's slabs 0-3 and 8 once P_B V_B,L completes.
//   WG1: [m_A ready] softmax B (m_B = max(m_A, rowmax S_B)) -> [m_B ready] | O_1 = O_1 2^(m - m_B) | P_B -> B's
//        RoPE slab | O_1 += P_B V_B,R (registers) | [P_A ready] O_1 += P_A' V_A,R -> [WG1 issued] | refill B's
//        slabs 4-7, then A's 4-8 as each P V completes | S of the next B by slab group (4-7 first).
// So each warpgroup's own P V starts right after its softmax (no hand-off), and the tensor pipe receives
// P V_B,L and the next S_A right behind WG1's two P V. Slab groups (a full barrier each) are the sets one
// warpgroup frees: buffer 0 {0-3} (WG0, early in the pair) and {4-8} (WG1); buffer 1 {4-7} (WG1, mid-pair)
// and {0-3, 8} (WG0, last); each refill is issued by the warpgroup that frees its group, and each S reads
// its early group first. The hand-offs in [] are mbarriers: all threads of the producing warpgroup arrive,
// the other waits (arrive-only named barriers order the same, but racecheck does not see them as ordering).
//
// Rows past the length come with the page: their scores are masked by position, and each warpgroup zeroes
// its V half of such rows before its P V of the tile. A request's tiles are padded to whole pairs: an odd
// last tile is followed by a phantom B (the last real tile's box again, all keys masked, V zeroed).
// wgmma: each warpgroup runs its own loop with one fixed wgmma sequence and wait counts (ptxas serializes
// the wgmma otherwise): on a request's last pair the next S is computed anyway, on buffer A (nothing writes
// A by then), and never read.
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
  using TiledMmaOr = decltype(make_tiled_mma(SM90::GMMA::rs_op_selector<
      Element, Element, float, Shape<_64, _256, _64>, GMMA::Major::K, GMMA::Major::MN>()));
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr float kNegInf = -INFINITY;
  using HandOff = cutlass::arch::ClusterBarrier;
  // hand-offs between the warpgroups (mbarriers, arrived at by all 128 threads of the producing one)
  constexpr int kMaReady = 0, kMbReady = 1, kPaReady = 2, kWg1Issued = 3;
  constexpr int kBarWarpgroup = 5 /* + wg */, kBarEpilogue = 7;
  constexpr int kRopeSlab = kHeadDimV * kTileTokens;  // element offset of a tile's RoPE slab
  constexpr int kSlabBytes = 64 * kTileTokens * int(sizeof(Element));
  static_assert(cosize_v<typename Cfg::SmemLayoutP> == kTileTokens * (kD - kHeadDimV), "P fills a RoPE slab");

  extern __shared__ char smem_raw[];
  auto& ss = shared_storage<typename Cfg::SharedStorage>(smem_raw);

  launch_dependent_grids();
  // wg broadcast from lane 0: ptxas then knows it is warp-uniform (the warpgroups run different wgmma
  // sequences; a divergent path would serialize them)
  const int tid = threadIdx.x, wg = __shfl_sync(0xffffffff, tid / 128, 0), wg_tid = tid % 128, lane = tid % 32;
  // The CTA's work, re-read per request from an opaque pointer rather than held through the request loop
  // (registers: held, these spilled)
  auto my_part = [&] {
    const SchedulePart* at = p.schedule + tiled_cta(p).part;
    asm volatile("" : "+l"(at));
    return *at;
  };
  const int first_req = my_part().begin_req;
  if (my_part().end_req < first_req) return;
  if (tid == 0) {
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) FullBarrier::init(&ss.kv_full[i], 1);
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) HandOff::init(&ss.hand_off[i], 128);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  TiledMmaS mma_s;
  typename Cfg::TiledMmaO mma_o;  // P from shared memory
  TiledMmaOr mma_or;              // P from registers
  auto thr_s = mma_s.get_thread_slice(wg_tid);
  auto thr_o = mma_o.get_thread_slice(wg_tid);
  auto thr_or = mma_or.get_thread_slice(wg_tid);
  Tensor tSrS = partition_fragment_C(mma_s, Shape<_64, _64>{});
  Tensor tOrO = partition_fragment_C(mma_o, Shape<_64, _256>{});
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<_64, _64>{}));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<_64, _256>{}));
  // This warpgroup's P of its own tile, 16-bit, in S's accumulator order, viewed as the A operand of a
  // 64 x 256 x 64 P V: accumulator value v is (column pair v % 2, row half v / 2 % 2, 8-column group v / 4),
  // a k-block's A values are (column pair, row half, 8-column half) of 16 columns.
  Tensor rP = make_tensor<Element>(Layout<Shape<Shape<_2, _2, _2>, _1, _4>, Stride<Stride<_1, _2, _4>, _0, _8>>{});
  const int my_row0 = (wg_tid / 32) * 16 + lane / 4;  // wgmma C layout: rows my_row0, my_row0 + 8
  auto slot_of = [](int v) { return (v >> 1) & 1; };
  auto tile_p = [&](int buf) { return make_tensor(make_smem_ptr(ss.k[buf] + kRopeSlab), typename Cfg::SmemLayoutP{}); };
  uint32_t kv_phase = 0;  // bit 2 buf + group: the parity of that slab group's next fill
  uint32_t hand_phase = 0;  // the parity of this pair's hand-offs (each completes once per pair)
  auto hand_off = [&](int i) { HandOff::arrive(&ss.hand_off[i]); };
  auto wait_hand_off = [&](int i) { HandOff::wait(&ss.hand_off[i], hand_phase); };

  for (int req = first_req;; ++req) {
    const SchedulePart part = my_part();
    if (req > part.end_req) break;
    const TiledCta cta = tiled_cta(p);
    const int m_tile = cta.m_tile, kvh = cta.kvh, heads_per_kv = p.h_q / p.h_kv;
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
        // rows' last keys grow with the row: the first row's is the smallest
        ss.min_last_key = min(end_token - 1, p.causal ? seqlen - p.s_q + m_tile * kTileRows / heads_per_kv : seqlen - 1);
      }
    }
    auto page_of = [&](int tile) {  // the phantom repeats the last real tile's box
      return p.block_table[req * p.bt_stride_b + min(tile, ss.tile_real - 1) * kTileTokens / p.page_size];
    };
    // Slab group g of `tile` into buffer buf (one thread; group sets in the header), on its full barrier.
    auto produce = [&](int tile, int page, int buf, int group) CUTLASS_LAMBDA_FUNC_INLINE {
      const int offset = (min(tile, ss.tile_real - 1) * kTileTokens) % p.page_size;
      uint64_t* full = &ss.kv_full[2 * buf + group];
      Element* smem_tile = ss.k[buf];
      const bool rope = group == 1;  // slab 8 comes with the late group of either buffer
      const int first = (buf == 0) == (group == 0) ? 0 : 4;
      FullBarrier::arrive_and_expect_tx(full, (rope ? 5 : 4) * kSlabBytes);
      auto copy = [&](int slab) {
        const int dim0 = slab * 64;  // (a copy: the TMA copy takes its coordinates by reference)
        SM90_TMA_LOAD_4D::copy(&p.kv_tma, full, uint64_t(TMA::CacheHintSm90::EVICT_NORMAL),
                               smem_tile + slab * 64 * kTileTokens, dim0, offset, kvh, page);
      };
      CUTE_UNROLL
      for (int s = 0; s < 4; ++s) copy(first + s);
      if (rope) copy(kD / 64 - 1);
    };
    if (tid == 0) {
      for (int tile = tile_lo; tile < min(tile_hi, tile_lo + 2); ++tile) {
        const int page = page_of(tile), buf = tile - tile_lo;
        produce(tile, page, buf, 0);
        produce(tile, page, buf, 1);
      }
    }
    load_q_tile<kD>(p, heads_per_kv, ss.q, m_tile, kvh, req, tid);  // rows past the problem's rows are zero
    __syncthreads();

    float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.f, 0.f};
    clear(tOrO);

    auto wait_group = [&](int buf, int group) CUTLASS_LAMBDA_FUNC_INLINE {
      const int bit = 2 * buf + group;
      FullBarrier::wait(&ss.kv_full[bit], (kv_phase >> bit) & 1);
      kv_phase ^= 1u << bit;
    };
    // S = Q K^T against buffer buf as two wgmma groups: the k-blocks of the early slab group (its first slab
    // given), then between() (the caller's waits: the late group's barrier, a refill), then the late group's.
    auto issue_qk = [&](int buf, auto early_first_slab, auto between) CUTLASS_LAMBDA_FUNC_INLINE {
      // Q's 36 operand descriptors are made here from an opaque pointer: made once outside the loop,
      // they would stay live in 72 registers (ptxas spilled with them)
      Element* q_smem = ss.q;
      asm volatile("" : "+l"(q_smem));
      Tensor tSrQ = thr_s.partition_fragment_A(make_tensor(make_smem_ptr(q_smem), typename Cfg::SmemLayoutQ{}));
      Tensor tSrK = thr_s.partition_fragment_B(make_tensor(make_smem_ptr(ss.k[buf]), typename Cfg::SmemLayoutK{}));
      constexpr int kEarly = decltype(early_first_slab)::value * 4;  // first k-block of the early group
      warpgroup_fence_operand(tSrS);
      warpgroup_arrive();
      mma_s.accumulate_ = GMMA::ScaleOut::Zero;
      gemm_kblocks<kEarly, kEarly + 16>(mma_s, tSrQ, tSrK, tSrS);
      warpgroup_commit_batch();
      between();
      warpgroup_arrive();
      if constexpr (kEarly == 0) {
        gemm_kblocks<16, 36>(mma_s, tSrQ, tSrK, tSrS);
      } else {
        gemm_kblocks<0, 16>(mma_s, tSrQ, tSrK, tSrS);
        gemm_kblocks<32, 36>(mma_s, tSrQ, tSrK, tSrS);
      }
      warpgroup_commit_batch();
    };
    // Once S is in registers: the tile's row maxima in log2 units (S itself stays unscaled: the scale goes
    // into P's exponent); scores of keys past a row's last key (length, causal) set to -inf, which only a
    // tile past the CTA's first row's last key can have (the rows' last keys grow with the row).
    auto mask_scores = [&](int tile, float (&tile_max)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
      warpgroup_fence_operand(tSrS);
      tile_max[0] = tile_max[1] = kNegInf;
      if (tile * kTileTokens + kTileTokens - 1 > ss.min_last_key) {
        const int last_key[2] = {ss.row_last_key[my_row0], ss.row_last_key[my_row0 + 8]};
        CUTE_UNROLL
        for (int i = 0; i < size(tSrS); ++i) {
          if (tile * kTileTokens + get<1>(tScS(i)) > last_key[slot_of(i)]) tSrS(i) = kNegInf;
        }
      }
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); ++i) tile_max[slot_of(i)] = fmaxf(tile_max[slot_of(i)], tSrS(i));
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) tile_max[k] = quad_max(tile_max[k]) * p.scale_log2;  // (scale_log2 > 0)
    };
    // This warpgroup's V half of `tile` (in buf) zeroed for rows past the length, before its P V.
    auto zero_rows_past_length = [&](int tile, int buf) CUTLASS_LAMBDA_FUNC_INLINE {
      const int valid = max(0, ss.end_token - tile * kTileTokens);
      if (valid < kTileTokens) {
        char* rows = reinterpret_cast<char*>(ss.k[buf]);
        constexpr int kHalfChunks = kHeadDimV / 2 * int(sizeof(Element)) / 16;
        for (int i = wg_tid; i < (kTileTokens - valid) * kHalfChunks; i += 128) {
          const int row = valid + i / kHalfChunks, chunk = wg * kHalfChunks + i % kHalfChunks;
          *reinterpret_cast<uint4*>(rows + swizzled_chunk_offset(row, chunk)) = make_uint4(0, 0, 0, 0);
        }
        cutlass::arch::fence_view_async_shared();
        // both warpgroups zero the same tiles, so both pass the same barriers (racecheck pairs by count)
        named_barrier_unaligned(kBarWarpgroup + wg, 128);
      }
    };
    auto v_half = [&](int buf) {
      Tensor sVt = make_tensor(make_smem_ptr(ss.k[buf]), typename Cfg::SmemLayoutVt{});
      return local_tile(sVt, Shape<_256, _64>{}, make_coord(wg, 0));
    };
    // O_wg += P V_wg of buffer buf, P from this warpgroup's registers / from the tile's RoPE slab
    auto issue_pv_own = [&](int buf) CUTLASS_LAMBDA_FUNC_INLINE {
      warpgroup_fence_operand(rP);
      issue_wgmma(mma_or, rP, thr_or.partition_fragment_B(v_half(buf)), tOrO, false);
      warpgroup_fence_operand(rP);
    };
    auto issue_pv_other = [&](int buf) CUTLASS_LAMBDA_FUNC_INLINE {
      issue_wgmma(mma_o, thr_o.partition_fragment_A(tile_p(buf)), thr_o.partition_fragment_B(v_half(buf)), tOrO,
                  false);
    };
    auto load_max = [&](const float* from, float (&m)[2]) { seesaw_load_max(from, my_row0, m); };
    auto store_max = [&](float* to, const float (&m)[2]) { seesaw_store_max(to, my_row0, lane, m); };
    auto rescale = [&](const float (&from)[2], const float (&to)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
      seesaw_rescale(tOrO, row_sum, from, to);
    };
    float* max_a = ss.row_max[0];
    float* max_b = ss.row_max[1];

    if (tile_lo < tile_hi) {
      if (wg == 0) {
        wait_group(0, 0);
        issue_qk(0, Int<0>{}, [&] { wait_group(0, 1); });
        warpgroup_wait<0>();
        for (int a = tile_lo; a < tile_hi; a += 2) {
          const bool more = a + 2 < tile_hi;
          const int page_a = wg_tid == 0 && more ? page_of(a + 2) : 0;
          const int page_b = wg_tid == 0 && more ? page_of(a + 3) : 0;
          float tile_max[2], m_a[2], m_b[2], sum_p[2] = {0.f, 0.f};
          mask_scores(a, tile_max);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_a[k] = fmaxf(row_max[k], tile_max[k]);
          store_max(max_a, m_a);
          hand_off(kMaReady);
          seesaw_exp_p(tSrS, rP, m_a, sum_p, p.scale_log2);
          rescale(row_max, m_a);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) row_sum[k] += sum_p[k];
          zero_rows_past_length(a, 0);
          issue_pv_own(0);
          warpgroup_wait<0>();
          warpgroup_fence_operand(tOrO);
          if (wg_tid == 0 && more) produce(a + 2, page_a, 0, 0);
          wait_hand_off(kMbReady);
          load_max(max_b, m_b);
          {  // P_A in m_B's units, for WG1
            float factor[2];
            CUTE_UNROLL
            for (int k = 0; k < 2; ++k) factor[k] = m_b[k] == kNegInf ? 1.f : fast_exp2(m_a[k] - m_b[k]);
            CUTE_UNROLL
            for (int i = 0; i < size(tSrS); ++i) rP(i) = Element(tSrS(i) * factor[slot_of(i)]);
            seesaw_store_p(rP, thr_s.partition_C(tile_p(0)));
          }
          hand_off(kPaReady);
          rescale(m_a, m_b);
          zero_rows_past_length(a + 1, 1);
          wait_hand_off(kWg1Issued);
          issue_pv_other(1);
          // S of the next A (on the last pair: of this A again, never read)
          if (more) wait_group(0, 0);
          issue_qk(0, Int<0>{}, [&] {
            warpgroup_wait<1>();  // P_B V_B,L: buffer B's slabs 0-3 and 8 are free
            if (wg_tid == 0 && more) produce(a + 3, page_b, 1, 1);
            if (more) wait_group(0, 1);
          });
          warpgroup_wait<0>();
          hand_phase ^= 1;
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) row_max[k] = m_b[k];
        }
      } else {
        wait_group(1, 0);
        issue_qk(1, Int<4>{}, [&] { wait_group(1, 1); });
        warpgroup_wait<0>();
        for (int a = tile_lo; a < tile_hi; a += 2) {
          const int b = a + 1;
          const bool more = a + 2 < tile_hi;
          const int page_a = wg_tid == 0 && more ? page_of(a + 2) : 0;
          const int page_b = wg_tid == 0 && more ? page_of(b + 2) : 0;
          float tile_max[2], m_a[2], m_b[2], sum_p[2] = {0.f, 0.f};
          mask_scores(b, tile_max);
          wait_hand_off(kMaReady);
          load_max(max_a, m_a);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_b[k] = fmaxf(m_a[k], tile_max[k]);
          store_max(max_b, m_b);
          hand_off(kMbReady);
          seesaw_exp_p(tSrS, rP, m_b, sum_p, p.scale_log2);
          rescale(row_max, m_b);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) row_sum[k] += sum_p[k];
          seesaw_store_p(rP, thr_s.partition_C(tile_p(1)));  // for WG0's P_B V_B,L
          zero_rows_past_length(b, 1);
          issue_pv_own(1);
          zero_rows_past_length(a, 0);
          wait_hand_off(kPaReady);
          issue_pv_other(0);
          hand_off(kWg1Issued);
          warpgroup_wait<1>();  // P_B V_B,R: buffer B's slabs 4-7 are free
          if (wg_tid == 0 && more) produce(b + 2, page_b, 1, 0);
          warpgroup_wait<0>();  // P_A V_A,R: buffer A's slabs 4-8 are free
          warpgroup_fence_operand(tOrO);
          if (wg_tid == 0 && more) produce(a + 2, page_a, 0, 1);
          // S of the next B (on the last pair: of A, which nothing writes any more; never read)
          if (more) wait_group(1, 0);
          issue_qk(more ? 1 : 0, Int<4>{}, [&] {
            if (more) wait_group(1, 1);
          });
          warpgroup_wait<0>();
          hand_phase ^= 1;
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) row_max[k] = m_b[k];
        }
      }
      // nothing is in flight here; saying so lets ptxas reuse S's registers in the epilogue
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);
    }

    // (read here rather than held through the loop: registers are at the limit)
    const RequestSplit split = request_split(p, my_part(), req);
    store_attention_output<Element, false, true, false>(p, ss.row_sum, kBarEpilogue, tOrO, tOcO, row_max, row_sum,
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
