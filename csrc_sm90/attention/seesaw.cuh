// Dense MLA decode for sm_90a over a paged cache whose tiles come by TMA (page_size a multiple of 64),
// d_qk 576: the "seesaw" schedule, in which one warpgroup's softmax runs while the other's GEMMs keep
// the tensor cores busy.
//
// Tiling. One CTA computes 64 query rows of one KV head (as in kernel.cuh) against a run of 32-token
// half tiles. Q (64 x 576, 72 KB) and a ring of 4 half tiles (32 x 576, 36 KB each) live in shared
// memory, swizzle-128B, K-major; V is the transposed view of the first 512 dims of a half tile.
// A half tile's RoPE slab (32 tokens x 64 dims = 4 KB) is read only by the one QK that uses it, and
// then holds that half tile's P (64 rows x 32 tokens, 16-bit, swizzle-64B) for both warpgroups' P V.
//
// Thread roles: 256 threads, two warpgroups; warpgroup w owns O[:, 256w, 256w + 256) (128 float32
// registers per thread). The half tiles go in rounds of two, a (even) and b (odd):
//   WG0: S_a = Q K_a^T | softmax a: m_a = max(m, rowmax S_a), P_a -> smem, signal | O_0 += P_a V_a,0
//        | wait for P_b, m_b | O_0 *= 2^(m_a - m_b), O_0 += P_b V_b,0 | issue S_a' of the next round
//   WG1: S_b = Q K_b^T | wait for P_a, m_a | O_1 += P_a V_a,1 issued, then (under it) softmax b:
//        m_b = max(m_a, rowmax S_b), P_b -> smem, signal | O_1 *= 2^(m_a - m_b), O_1 += P_b V_b,1
//        | issue S_b' of the next round
// so softmax a overlaps S_b, and softmax b overlaps P_a V_a in both warpgroups. The running maxima
// move in one chain (m -> m_a -> m_b); each warpgroup rescales its O slice and its share of the row
// sums at every step, so both hold the same maxima and the epilogue is kernel.cuh's.
// Hand-offs: named barriers 1 (P_a ready: WG0 arrives, WG1 syncs) and 2 (P_b ready: WG1 arrives, WG0
// syncs); each is completed before its next use by the chain itself (WG0 waits for P_b before it
// writes the next m_a, WG1 waits for P_a before it writes the next m_b).
//
// Pipeline: a 4-stage ring of half tiles with a full (TMA transaction) and an empty (8 warps) mbarrier
// per stage. Thread 0 issues a half tile's nine 64 x 32 boxes once the stage's previous occupant has
// been released by all 8 warps, i.e. at the end of the round that consumed it: a round's loads lead
// their use by one round (64 tokens), as in the two-buffer kernel, while the phases overlap. Stage
// and phase come from a count of half tiles that runs across the CTA's requests.
// Rows past the length come with the page (TMA copies whole boxes): the warpgroup that computes the
// half tile's S zeroes their value dims before its QK, so NaN in unused slots cannot reach P V (their
// scores are masked by position).
#pragma once

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "../common/device_utils.cuh"
#include "../common/params.h"
#include "epilogue.cuh"
#include "tile_copy.cuh"

namespace flashmla_sm90 {

using namespace cute;

constexpr int kSeesawStages = 4;

template <typename Element>
struct SeesawConfig {
  static constexpr int kD = 576;
  using SmemLayoutQ =
      decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Int<kTileRows>, Int<kD>>{}));
  using SmemLayoutKV =
      decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Int<kHalfTileTokens>, Int<kD>>{}));
  using SmemLayoutVt = decltype(composition(
      SmemLayoutKV{}, make_layout(Shape<Int<kD>, Int<kHalfTileTokens>>{}, GenRowMajor{})));
  using SmemLayoutP =
      decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Element>{}, Shape<Int<kTileRows>, Int<kHalfTileTokens>>{}));
  using TiledMmaS = decltype(make_tiled_mma(SM90::GMMA::ss_op_selector<
      Element, Element, float, Shape<_64, Int<kHalfTileTokens>, Int<kD>>, GMMA::Major::K, GMMA::Major::K>()));
  using TiledMmaO = decltype(make_tiled_mma(SM90::GMMA::ss_op_selector<
      Element, Element, float, Shape<_64, _256, Int<kHalfTileTokens>>, GMMA::Major::K, GMMA::Major::MN>()));

  static constexpr int kStageElems = cosize_v<SmemLayoutKV>;
  static constexpr int kRopeSlab = kHeadDimV * kHalfTileTokens;  // element offset of the RoPE slab
  static_assert(cosize_v<SmemLayoutP> == kStageElems - kRopeSlab, "P fills a half tile's RoPE slab");
  static constexpr uint32_t kStageBytes = kStageElems * sizeof(Element);

  struct SharedStorage {
    alignas(1024) Element q[cosize_v<SmemLayoutQ>];
    alignas(1024) Element kv[kSeesawStages][kStageElems];
    float max_a[kTileRows], max_b[kTileRows];  // the hand-offs' running maxima
    float row_sum[2][kTileRows];
    int released[kSeesawStages];  // warpgroups done with each stage's half tile (the second refills it)
    alignas(8) uint64_t full[kSeesawStages];
  };
  static constexpr int kThreads = 256;
  static constexpr int kSmemBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an sm_90 CTA may have");
};

template <typename Element>
__global__ void __launch_bounds__(256, 1) mla_decode_seesaw_kernel(const __grid_constant__ AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = SeesawConfig<Element>;
  constexpr int kD = Cfg::kD, kStages = kSeesawStages, kHalf = kHalfTileTokens;
  constexpr float kNegInf = -INFINITY;
  constexpr int kBarPa = 1, kBarPb = 2, kBarWarpgroup = 3 /* + wg */, kBarEpilogue = 5;
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;

  extern __shared__ char smem_raw[];
  auto& ss = *reinterpret_cast<typename Cfg::SharedStorage*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));

  // wg broadcast from lane 0: ptxas then knows it is warp-uniform, so the warpgroups' different wgmma
  // sequences are not divergent paths (which would serialize the wgmma)
  const int tid = threadIdx.x, wg = __shfl_sync(0xffffffff, tid / 128, 0), wg_tid = tid % 128, lane = tid % 32;
  const int m_tiles = (p.rows + kTileRows - 1) / kTileRows;
  const int m_tile = blockIdx.x % m_tiles, kvh = (blockIdx.x / m_tiles) % p.h_kv;
  const SchedulePart part = p.schedule[blockIdx.x / m_tiles / p.h_kv];
  if (part.end_req < part.begin_req) return;
  const int heads_per_kv = p.h_q / p.h_kv;
  if (tid == 0) {
    CUTE_UNROLL
    for (int s = 0; s < kStages; ++s) {
      FullBarrier::init(&ss.full[s], 1);
      ss.released[s] = 0;
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Cfg::SmemLayoutQ{});
  typename Cfg::TiledMmaS mma_s;
  typename Cfg::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(wg_tid);
  auto thr_o = mma_o.get_thread_slice(wg_tid);
  Tensor tSrQ = thr_s.partition_fragment_A(sQ);
  Tensor tSrS = partition_fragment_C(mma_s, Shape<_64, Int<kHalf>>{});
  Tensor tOrO = partition_fragment_C(mma_o, Shape<_64, _256>{});
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<_64, Int<kHalf>>{}));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<_64, _256>{}));
  const int my_row0 = (wg_tid / 32) * 16 + lane / 4;  // wgmma C layout: rows my_row0, my_row0 + 8
  auto slot_of = [](int v) { return (v >> 1) & 1; };
  auto stage_p = [&](int s) { return make_tensor(make_smem_ptr(ss.kv[s] + Cfg::kRopeSlab), typename Cfg::SmemLayoutP{}); };
  const Element* q = static_cast<const Element*>(p.q);
  int ring_count = 0;  // half tiles this CTA has put through the ring, over all its requests

  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int seqlen = p.seqlens[req];
    const int n_tiles = (seqlen + kTileTokens - 1) / kTileTokens;
    const int tile_lo = req == part.begin_req ? part.begin_tile : 0;
    const int tile_hi = req == part.end_req ? min(part.end_tile, n_tiles) : n_tiles;
    const int first_split = p.num_splits[req];
    const int n_splits = p.num_splits[req + 1] - first_split;
    const int slot = req == part.begin_req ? part.begin_slot : first_split;
    // Half tiles [h_lo, h_hi), padded to whole rounds: a request's odd last one is followed by a phantom
    // (h_real), a copy of its box whose keys are all masked and whose value dims are zeroed.
    const int h_lo = tile_lo * 2, h_real = max(h_lo, min(tile_hi * 2, (seqlen + kHalf - 1) / kHalf));
    const int h_hi = h_lo + ((h_real - h_lo + 1) & ~1);
    const int ring0 = ring_count - h_lo;  // ring index of half tile h is ring0 + h
    ring_count += h_hi - h_lo;
    auto stage_of = [&](int h) { return (ring0 + h) % kStages; };
    auto box_of = [&](int h) { return min(h, h_real - 1); };  // the half tile whose rows h's box holds
    auto page_of = [&](int h) { return p.block_table[req * p.bt_stride_b + box_of(h) * kHalf / p.page_size]; };

    // Half tile h into its stage (one thread): nine 64 x 32 boxes on the stage's full barrier.
    auto produce = [&](int h, int page) CUTLASS_LAMBDA_FUNC_INLINE {
      const int s = stage_of(h);
      FullBarrier::arrive_and_expect_tx(&ss.full[s], Cfg::kStageBytes);
      const int offset = (box_of(h) * kHalf) % p.page_size;
      CUTE_UNROLL
      for (int slab = 0; slab < kD / 64; ++slab) {
        SM90_TMA_LOAD_4D::copy(&p.kv_tma, &ss.full[s], uint64_t(TMA::CacheHintSm90::EVICT_NORMAL),
                               ss.kv[s] + slab * 64 * kHalf, slab * 64, offset, kvh, page);
      }
    };
    if (tid == 0) {
      for (int h = h_lo; h < min(h_hi, h_lo + kStages); ++h) produce(h, page_of(h));
    }
    {  // Q tile by cp.async: rows past the problem's rows are zero
      const int copy_row = tid / 4, copy_chunk0 = tid % 4;
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

    // S = Q K_h^T once half tile h has landed (this warpgroup only). With `resident`, h is the stage's
    // current half tile, already waited for, whose RoPE slab now holds P: the GEMM runs for its
    // place in the wgmma sequence only and its S is never read (finite: P and the value dims are).
    auto issue_qk = [&](int h, bool resident) CUTLASS_LAMBDA_FUNC_INLINE {
      const int s = stage_of(h);
      if (!resident) {
        FullBarrier::wait(&ss.full[s], ((ring0 + h) / kStages) & 1);
        const int valid = max(0, seqlen - h * kHalf);
        if (valid < kHalf) {  // the last half tile or the phantom: zero the value dims of the rows past the length
          char* tile = reinterpret_cast<char*>(ss.kv[s]);
          constexpr int kValueChunks = kHeadDimV * int(sizeof(Element)) / 16;
          for (int i = wg_tid; i < (kHalf - valid) * kValueChunks; i += 128) {
            const int row = valid + i / kValueChunks, chunk = i % kValueChunks;
            *reinterpret_cast<uint4*>(tile + swizzled_chunk_offset<kHalf>(row, chunk)) = make_uint4(0, 0, 0, 0);
          }
          cutlass::arch::fence_view_async_shared();
          named_barrier(kBarWarpgroup + wg, 128);
        }
      }
      Tensor sK = make_tensor(make_smem_ptr(ss.kv[s]), typename Cfg::SmemLayoutKV{});
      Tensor tSrK = thr_s.partition_fragment_B(sK);
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
    // Once S is in registers: mask (length, causal), scale into log2 units, row maxima of the half tile.
    auto mask_scores = [&](int h, float (&tile_max)[2]) {
      warpgroup_fence_operand(tSrS);
      tile_max[0] = tile_max[1] = kNegInf;
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); ++i) {
        const int token = h * kHalf + get<1>(tScS(i));
        const float s = token <= last_key[slot_of(i)] ? tSrS(i) * p.scale_log2 : kNegInf;
        tSrS(i) = s;
        tile_max[slot_of(i)] = fmaxf(tile_max[slot_of(i)], s);
      }
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) tile_max[k] = quad_max(tile_max[k]);
    };
    // P = 2^(S - m) into half tile h's RoPE slab; adds this thread's share of the row sums to sum.
    auto write_p = [&](int h, const float (&m)[2], float (&sum)[2]) {
      Tensor tSsP = thr_s.partition_C(stage_p(stage_of(h)));
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); i += 2) {
        const int k = slot_of(i);
        const float m_use = m[k] == kNegInf ? 0.f : m[k];
        const float p0 = exp2f(tSrS(i) - m_use), p1 = exp2f(tSrS(i + 1) - m_use);
        sum[k] += p0 + p1;
        Element pair[2] = {Element(p0), Element(p1)};
        *reinterpret_cast<uint32_t*>(&tSsP(i)) = *reinterpret_cast<const uint32_t*>(pair);
      }
      cutlass::arch::fence_view_async_shared();  // P stores -> the wgmma reads of both warpgroups
    };
    // Moves this warpgroup's O slice and row sums from maxima `from` to `to` (to >= from).
    auto rescale = [&](const float (&from)[2], const float (&to)[2]) {
      float factor[2];
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) {
        factor[k] = to[k] == kNegInf ? 1.f : exp2f(from[k] - to[k]);
        row_sum[k] *= factor[k];
      }
      if (factor[0] != 1.f || factor[1] != 1.f) {  // the running max rarely moves after a few tiles
        CUTE_UNROLL
        for (int i = 0; i < size(tOrO); ++i) tOrO(i) *= factor[slot_of(i)];
      }
    };
    // O_wg += P_h V_h,wg
    auto issue_pv = [&](int h) CUTLASS_LAMBDA_FUNC_INLINE {
      const int s = stage_of(h);
      Tensor tOrP = thr_o.partition_fragment_A(stage_p(s));
      Tensor sVt = make_tensor(make_smem_ptr(ss.kv[s]), typename Cfg::SmemLayoutVt{});
      Tensor tOrV = thr_o.partition_fragment_B(local_tile(sVt, Shape<_256, Int<kHalf>>{}, make_coord(wg, 0)));
      warpgroup_fence_operand(tOrO);
      warpgroup_arrive();
      CUTE_UNROLL
      for (int kb = 0; kb < size<2>(tOrP); ++kb) cute::gemm(mma_o, tOrP(_, _, kb), tOrV(_, _, kb), tOrO);
      warpgroup_commit_batch();
    };
    // Warpgroup done with half tile h (its P V has completed): the second warpgroup to say so refills
    // the stage with half tile h + kStages, whose page it read ahead (refill_page).
    auto release = [&](int h, int refill_page) CUTLASS_LAMBDA_FUNC_INLINE {
      if (wg_tid == 0) {
        const int s = stage_of(h);
        __threadfence_block();
        if (atomicAdd(&ss.released[s], 1) == 1) {
          ss.released[s] = 0;
          if (h + kStages < h_hi) produce(h + kStages, refill_page);
        }
      }
      __syncwarp();
    };
    auto read_page_ahead = [&](int h) { return wg_tid == 0 && h + kStages < h_hi ? page_of(h + kStages) : 0; };
    auto load_max = [&](const float* from, float (&m)[2]) {
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) m[k] = from[my_row0 + 8 * k];
    };
    auto store_max = [&](float* to, const float (&m)[2]) {
      if (lane % 4 == 0) {
        CUTE_UNROLL
        for (int k = 0; k < 2; ++k) to[my_row0 + 8 * k] = m[k];
      }
    };

    // WG0 issues the S of its next half tile as soon as P_a is out of its registers, so S runs under
    // softmax b; WG1 issues its S at the top of a round, so it runs under softmax a. A stage is
    // released once both warpgroups' P V of it has completed: a in the round, b at the top of the next.
    // The first and last rounds are separate instantiations, so that every wgmma wait has a fixed count
    // (ptxas serializes the wgmma otherwise). WG0 has [S_a, P_b V_b of the last round] in flight at the
    // top of a round, WG1 [P_b V_b of the last round].
    int page_b_ahead = 0;  // the page of the refill of the last round's b
    // The end of a round in both warpgroups, once P_a V_a has completed: O and row sums to maximum m_b,
    // P_b V_b issued.
    auto finish_round = [&](int a, int page_a, int page_b, const float (&m_a)[2], const float (&m_b)[2],
                            const float (&sum_p)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
      warpgroup_fence_operand(tOrO);
      release(a, page_a);
      rescale(m_a, m_b);
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) {
        row_sum[k] += sum_p[k];  // this warpgroup's P, now at maximum m_b
        row_max[k] = m_b[k];
      }
      issue_pv(a + 1);
      page_b_ahead = page_b;
    };
    if (h_lo < h_hi) {
      // The wgmma sequence of a warpgroup is the same in every round, so every wait has a fixed count
      // (ptxas serializes the wgmma otherwise), and each warpgroup runs its own loop (no path from one
      // warpgroup's code into the other's, which ptxas could not tell from a real one).
      if (wg == 0) {
        issue_qk(h_lo, false);
        warpgroup_wait<0>();
        for (int a = h_lo; a < h_hi; a += 2) {
          // in flight: [S_a, P_b V_b of the last round] (none in the first round)
          const int page_a = read_page_ahead(a), page_b = read_page_ahead(a + 1);
          float tile_max[2], m_a[2], m_b[2], sum_p[2] = {0.f, 0.f};
          warpgroup_wait<1>();  // S_a
          warpgroup_fence_operand(tSrS);
          mask_scores(a, tile_max);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_a[k] = fmaxf(row_max[k], tile_max[k]);
          write_p(a, m_a, sum_p);
          store_max(ss.max_a, m_a);
          named_barrier_arrive(kBarPa, 256);
          warpgroup_wait<0>();  // the last round's P_b V_b
          warpgroup_fence_operand(tOrO);
          if (a > h_lo) release(a - 1, page_b_ahead);
          rescale(row_max, m_a);
          issue_pv(a);
          // the next round's S_a; in the last round a stand-in GEMM on this round's a
          const bool last = a + 2 >= h_hi;
          issue_qk(last ? a : a + 2, last);
          named_barrier(kBarPb, 256);
          load_max(ss.max_b, m_b);
          warpgroup_wait<0>();  // P_a V_a
          finish_round(a, page_a, page_b, m_a, m_b, sum_p);
        }
      } else {
        for (int a = h_lo; a < h_hi; a += 2) {
          const int b = a + 1;
          const int page_a = read_page_ahead(a), page_b = read_page_ahead(b);
          float tile_max[2], m_a[2], m_b[2], sum_p[2] = {0.f, 0.f};
          issue_qk(b, false);
          warpgroup_wait<0>();  // the last round's P_b V_b, and S_b
          warpgroup_fence_operand(tOrO);
          warpgroup_fence_operand(tSrS);
          if (a > h_lo) release(a - 1, page_b_ahead);
          mask_scores(b, tile_max);
          named_barrier(kBarPa, 256);
          load_max(ss.max_a, m_a);
          rescale(row_max, m_a);
          issue_pv(a);
          // softmax b under both warpgroups' P_a V_a
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_b[k] = fmaxf(m_a[k], tile_max[k]);
          write_p(b, m_b, sum_p);
          store_max(ss.max_b, m_b);
          named_barrier_arrive(kBarPb, 256);
          warpgroup_wait<0>();  // P_a V_a
          finish_round(a, page_a, page_b, m_a, m_b, sum_p);
        }
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(tOrO);
      release(h_hi - 1, page_b_ahead);
    }

    store_attention_output<Element, false>(p, ss.row_sum, kBarEpilogue, tOrO, tOcO, row_max, row_sum, m_tile, kvh,
                                           req, slot, n_splits);
    __syncthreads();  // Q tile and row_sum are reused by the next request
  }
#endif
}

template <typename Element>
cudaError_t launch_decode_seesaw(const AttentionParams& p, int num_parts, cudaStream_t stream) {
  using Cfg = SeesawConfig<Element>;
  auto kernel = mla_decode_seesaw_kernel<Element>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int64_t ctas = int64_t((p.rows + kTileRows - 1) / kTileRows) * p.h_kv * num_parts;
  if (ctas > 0x7fffffff) return cudaErrorInvalidConfiguration;
  kernel<<<dim3(unsigned(ctas)), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace flashmla_sm90
