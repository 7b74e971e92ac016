// Token-sparse MLA attention for sm_90a over a bf16 cache (sparse prefill; sparse decode on a bf16 cache):
// a producer warpgroup gathers the indexed rows while two consumer warpgroups run the seesaw schedule of
// decode_seesaw.cuh. Rows are gathered by cp.async (Hopper's TMA cannot gather arbitrary rows).
//
// Tiling. One CTA computes 64 query rows of one KV head against its schedule part's 64-key tiles, taken in
// pairs (A in buffer 0, B in buffer 1; Q 72 KB + two 72 KB tiles for d_qk 576, swizzle-128B, K-major; V is
// the transposed view of a tile's first 512 dims). Warpgroup w (w < 2) owns O[:, 256w, 256w + 256).
//
// Thread roles (384 threads; setmaxnreg: consumers 216 registers, producer 72):
//   WG0 (consumer): S_A = Q K_A^T, softmax A (P_A), O_0 += P_A V_A,0 then P_B V_B,0
//   WG1 (consumer): S_B = Q K_B^T, O_1 += P_A V_A,1, softmax B under it (P_B), O_1 += P_B V_B,1
//   WG2 (producer): gathers tiles into the buffers, half-buffer by half-buffer, as they are released; loads
//        the Q tile of each request after the part's first once both consumers' last Q K^T of the request
//        before has completed (mbarriers q_empty / q_full), so that the load runs under their last P V and
//        epilogue (sparse prefill: a CTA runs many tokens). The consumers load the first request's Q
//        themselves (and every one with FLASHMLA_SM90_Q_BY_PRODUCER=0), beside the producer's first gathers.
// The consumers' hand-offs are those of decode_seesaw.cuh (named barriers 1: P_A and m_A ready, 2: P_B and
// m_B ready). P of a tile lives in its RoPE slab for d_qk 576 (read only by that tile's Q K^T), in a
// buffer of its own for d_qk 512.
//
// Pipeline. Each buffer is two halves with a full and an empty mbarrier each: L = dims [0, 256) (slabs
// 0..3), R = the rest (slabs 4..; and P for d_qk 576). L is read by WG0 only (S and its P V) and is
// released by WG0 once its P V of the tile completed; R by both (S, WG1's P V, P), released by both. The
// producer refills in the order the halves free up — A.L, A.R, B.L, B.R — so the next pair's gathers are
// in flight while this pair's P V run, and the consumers never issue a copy. Its thread t copies 16-byte
// column t % 8 of every 64-dim slab of rows t / 8 + 16 i (i < 4): 16 or 20 copies per half (no L2
// prefetch hint). Invalid keys (index < 0 or >= capacity, past topk_length, or past this
// part's tiles: the phantom B that pads an odd count) are zero-filled, never read, and masked through a
// per-buffer validity byte that the producer writes before it arrives on the buffer's L full barrier
// (count 256: 128 cp.async completions + 128 release arrivals). Sparse prefill (AttentionParams::l2_keep_kv):
// the gathers carry an evict_last L2 policy and the Q loads evict_first, since every query token gathers from
// the same kv while each token's Q is read once (h128 prefill 1-2 % faster, docs/benchmarks/sm90-sparse.md).
//
// Measured (H100, docs/benchmarks/sm90-sparse.md): sparse prefill h128 6490 -> ~5000 us, bf16 sparse decode
// h128 s_q 2 519 -> ~390 us against the two-buffer kernel. fp8_v32 rows go to fp8_decode.cuh:
// dequantizing producers on this kernel were 15-20 % slower in every form tried (registers, fc06d1b;
// in-place cp.async staging, 35a26d3; 2-CTA clusters sharing the dequantization, 6aaf268), bound by the
// producer's per-half chain (release, copies land, dequantize, arrive) with both tiles of a pair in use.
#pragma once

#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
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

template <typename Element, int kD>
struct SparseSeesawConfig {
  using Base = AttentionConfig<Element, kD>;
  static constexpr bool kPInRope = kD > kHeadDimV;  // P of a tile in its RoPE slab (d_qk 576)
  struct SharedStorage {
    alignas(1024) Element q[cosize_v<typename Base::SmemLayoutQ>];
    alignas(1024) Element k[2][cosize_v<typename Base::SmemLayoutK>];
    alignas(1024) Element p[kPInRope ? 1 : 2][kPInRope ? 1 : cosize_v<typename Base::SmemLayoutP>];
    float row_max[2][kTileRows];        // m_A, m_B hand-offs
    float row_sum[2][kTileRows];        // epilogue
    uint8_t key_valid[2][kTileTokens];  // per buffer: which keys are real
    alignas(8) uint64_t full[2][2];     // [buffer][half]: the half has landed
    alignas(8) uint64_t empty[2][2];    // [buffer][half]: its readers are done with it
    alignas(8) uint64_t q_full;         // the request's Q tile has landed
    alignas(8) uint64_t q_empty;        // both consumers have issued their last Q K^T of the request before
  };
  static constexpr int kThreads = 384;
  static constexpr int kSmemBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an sm_90 CTA may have");
};

// kPartialMax: split parts also write their row maxima (a sparse prefill on a uniform plan, p.max_accum)
template <typename Element, int kD, bool kPartialMax>
__global__ void __launch_bounds__(384, 1) mla_sparse_seesaw_kernel(const __grid_constant__ AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kProducerRegs = 72, kConsumerRegs = 216;  // 2 x 128 x 216 + 128 x 72 <= 64 K
  using Cfg = SparseSeesawConfig<Element, kD>;
  using Base = typename Cfg::Base;
  using TiledMmaS = decltype(make_tiled_mma(SM90::GMMA::ss_op_selector<
      Element, Element, float, Shape<_64, _64, Int<kD>>, GMMA::Major::K, GMMA::Major::K>()));
  using Barrier = cutlass::arch::ClusterBarrier;
  constexpr float kNegInf = -INFINITY;
  constexpr int kBarPa = 1, kBarPb = 2, kBarEpilogue = 3, kBarConsumers = 4;
  constexpr int kSlabs = kD / 64, kSlabsL = kHeadDimV / 2 / 64;  // L: the first 4 slabs
  constexpr int kKBlocksL = kSlabsL * 4;                          // 16-wide k-blocks of Q K^T in L
  constexpr int kRopeSlab = kHeadDimV * kTileTokens;              // element offset of a tile's RoPE slab

  extern __shared__ char smem_raw[];
  auto& ss = shared_storage<typename Cfg::SharedStorage>(smem_raw);

  launch_dependent_grids();
  // wg broadcast from lane 0: warp-uniform for ptxas (the roles run different wgmma sequences)
  const int tid = threadIdx.x, wg = __shfl_sync(0xffffffff, tid / 128, 0), wg_tid = tid % 128, lane = tid % 32;
  const TiledCta cta = tiled_cta(p);
  const int m_tile = cta.m_tile, kvh = cta.kvh;
  const SchedulePart part = p.schedule[cta.part];
  if (part.end_req < part.begin_req) return;
  if (tid == 0) {
    for (int b = 0; b < 2; ++b) {
      // L: cp.async completions (128, noinc) + releases of the validity bytes (128); R: completions
      Barrier::init(&ss.full[b][0], 256);
      Barrier::init(&ss.full[b][1], 128);
      Barrier::init(&ss.empty[b][0], 128);
      Barrier::init(&ss.empty[b][1], 256);
    }
    Barrier::init(&ss.q_full, 128);   // the producer's cp.async completions (noinc)
    Barrier::init(&ss.q_empty, 256);  // the consumers
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  // The tile range of request `req` in this part, padded to whole pairs (a phantom B at most).
  struct Run {
    int lo, real, hi, end_token;
  };
  auto run_of = [&](int req, int seqlen) {
    Run r;
    const int n_tiles = (seqlen + kTileTokens - 1) / kTileTokens;
    r.lo = req == part.begin_req ? part.begin_tile : 0;
    r.real = max(r.lo, req == part.end_req ? min(part.end_tile, n_tiles) : n_tiles);
    r.hi = r.lo + ((r.real - r.lo + 1) & ~1);
    r.end_token = min(seqlen, r.real * kTileTokens);  // keys at or past it are not this part's
    return r;
  };

  if (wg == 2) {
    // ---------------------------------------------------------------- producer
    cutlass::arch::warpgroup_reg_dealloc<kProducerRegs>();
    const int col = wg_tid % 8, row0 = wg_tid / 8;  // rows row0 + 16 i
    // swizzle-128B: 16-byte unit u of rows row0 + 16 i sits at u ^ (row0 % 8) for every i
    const uint32_t tile0 = static_cast<uint32_t>(__cvta_generic_to_shared(ss.k[0])) + row0 * 128;
    auto unit = [&](int u) { return uint32_t(u ^ (row0 & 7)) << 4; };
    constexpr uint32_t kBufBytes = sizeof(ss.k[0]);
    const Element* kv = static_cast<const Element*>(p.kv) + int64_t(kvh) * p.kv_stride_h;
    auto row_of = [&](int idx) {  // a valid index's cache row
      return kv + cache_slot_offset(p, idx);
    };
    // the prefill's kv stays in the L2 while each token's Q streams through it. (No L2 prefetch size hint on
    // the gathers: with .L2::256B, each of a row's 8 threads per slab asking for 256 bytes, the rows measured
    // 3-6 % slower, .L2::128B 1-3 %.)
    const uint64_t kv_policy = l2_policy(p.l2_keep_kv ? L2Hint::kKeep : L2Hint::kNormal);
    const uint64_t q_policy = l2_policy(p.l2_keep_kv ? L2Hint::kStream : L2Hint::kNormal);
    // slabs [s_begin, s_end) of this thread's 4 rows of a tile
    auto copy_slabs = [&](uint32_t tile, const Element* const (&src)[4], const bool (&valid)[4], auto s_begin,
                          auto s_end) CUTLASS_LAMBDA_FUNC_INLINE {
      CUTE_UNROLL
      for (int s = decltype(s_begin)::value; s < decltype(s_end)::value; ++s) {
        CUTE_UNROLL
        for (int i = 0; i < 4; ++i) {
          cp_async_16_hinted(tile + s * 8192 + i * 2048 + unit(col), src[i] + s * 64 + col * 8, valid[i], kv_policy);
        }
      }
    };
    uint32_t phase = 1;    // empty barriers: the first wait of each passes at once
    uint32_t q_free = 0;   // parity of the q_empty phase to wait for (the consumers' arrivals per request)
    for (int req = part.begin_req; req <= part.end_req; ++req) {
      // The Q tile of a request after the part's first, once the consumers' last Q K^T of the request before
      // has completed: its load runs under their last P V and epilogue (thread t: chunks t % 4 + 4 j of rows
      // t / 4 and t / 4 + 32). The first request's the consumers load while this warpgroup starts gathering.
      if (p.q_by_producer && req > part.begin_req) {
        Barrier::wait(&ss.q_empty, q_free);
        q_free ^= 1;
        int copy_row = wg_tid / 4, copy_chunk0 = wg_tid % 4;
        asm volatile("" : "+r"(copy_row), "+r"(copy_chunk0));  // opaque: else their offsets are held (spilled)
        CUTE_UNROLL
        for (int half = 0; half < 2; ++half) {
          load_q_tile_rows<kD * int(sizeof(Element)) / 16, Element, true>(
              p, static_cast<const Element*>(p.q), p.h_q / p.h_kv, ss.q, m_tile, kvh, req, copy_row + 32 * half,
              copy_chunk0, q_policy);
        }
        cutlass::arch::cpasync_barrier_arrive_noinc(&ss.q_full);
      }
      const Run run = run_of(req, sparse_key_count(p, req));
      const int32_t* indices = p.indices + req * p.idx_stride_b + kvh * p.idx_stride_h;
      auto index_of = [&](int tile, int i) {
        const int token = tile * kTileTokens + row0 + 16 * i;
        return token < run.end_token ? __ldg(indices + token) : -1;
      };
      for (int a = run.lo; a < run.hi; a += 2) {
        int index[2][4];
        CUTE_UNROLL
        for (int b = 0; b < 2; ++b) {
          CUTE_UNROLL
          for (int i = 0; i < 4; ++i) index[b][i] = index_of(a + b, i);
        }
        CUTE_UNROLL
        for (int b = 0; b < 2; ++b) {
          const Element* src[4];
          bool valid[4];
          CUTE_UNROLL
          for (int i = 0; i < 4; ++i) {
            const int idx = index[b][i];
            valid[i] = idx >= 0 && idx < p.capacity;
            src[i] = valid[i] ? row_of(idx) : kv;
          }
          const uint32_t tile = tile0 + b * kBufBytes;
          Barrier::wait(&ss.empty[b][0], phase);
          if (col == 0) {
            CUTE_UNROLL
            for (int i = 0; i < 4; ++i) ss.key_valid[b][row0 + 16 * i] = valid[i];
          }
          copy_slabs(tile, src, valid, Int<0>{}, Int<kSlabsL>{});
          cutlass::arch::cpasync_barrier_arrive_noinc(&ss.full[b][0]);
          Barrier::arrive(&ss.full[b][0]);  // releases the validity bytes
          Barrier::wait(&ss.empty[b][1], phase);
          copy_slabs(tile, src, valid, Int<kSlabsL>{}, Int<kSlabs>{});
          cutlass::arch::cpasync_barrier_arrive_noinc(&ss.full[b][1]);
        }
        phase ^= 1;
      }
    }
    cp_async_wait<0>();
    return;
  }

  // ---------------------------------------------------------------- consumers
  cutlass::arch::warpgroup_reg_alloc<kConsumerRegs>();
  TiledMmaS mma_s;
  typename Base::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(wg_tid);
  auto thr_o = mma_o.get_thread_slice(wg_tid);
  Tensor tSrS = partition_fragment_C(mma_s, Shape<_64, _64>{});
  Tensor tOrO = partition_fragment_C(mma_o, Shape<_64, _256>{});
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<_64, _64>{}));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<_64, _256>{}));
  const int my_row0 = (wg_tid / 32) * 16 + lane / 4;  // wgmma C layout: rows my_row0, my_row0 + 8
  auto slot_of = [](int v) { return (v >> 1) & 1; };
  auto tile_p = [&](int buf) {
    Element* at;
    if constexpr (Cfg::kPInRope) {
      at = ss.k[buf] + kRopeSlab;
    } else {
      at = ss.p[buf];
    }
    return make_tensor(make_smem_ptr(at), typename Base::SmemLayoutP{});
  };
  uint32_t phase = 0;  // full barriers: parity of the current pair
  float* max_a = ss.row_max[0];
  float* max_b = ss.row_max[1];

  // S = Q K^T of buffer buf: L's k-blocks once L has landed, then R's, one wgmma group.
  auto qk_blocks = [&](int buf, auto kb_begin, auto kb_end) CUTLASS_LAMBDA_FUNC_INLINE {
    // operand descriptors made from opaque pointers after the wait: made earlier, they would be held
    // (and spilled) across it
    Element* q_smem = ss.q;
    Element* k_smem = ss.k[buf];
    asm volatile("" : "+l"(q_smem), "+l"(k_smem));
    Tensor tSrQ = thr_s.partition_fragment_A(make_tensor(make_smem_ptr(q_smem), typename Base::SmemLayoutQ{}));
    Tensor tSrK = thr_s.partition_fragment_B(make_tensor(make_smem_ptr(k_smem), typename Base::SmemLayoutK{}));
    CUTE_UNROLL
    for (int kb = decltype(kb_begin)::value; kb < decltype(kb_end)::value; ++kb) {
      cute::gemm(mma_s, tSrQ(_, _, kb), tSrK(_, _, kb), tSrS);
      mma_s.accumulate_ = GMMA::ScaleOut::One;
    }
  };
  auto issue_qk = [&](int buf) CUTLASS_LAMBDA_FUNC_INLINE {
    Barrier::wait(&ss.full[buf][0], phase);
    mma_s.accumulate_ = GMMA::ScaleOut::Zero;
    warpgroup_fence_operand(tSrS);
    warpgroup_arrive();
    qk_blocks(buf, Int<0>{}, Int<kKBlocksL>{});
    Barrier::wait(&ss.full[buf][1], phase);
    qk_blocks(buf, Int<kKBlocksL>{}, Int<kD / 16>{});
    warpgroup_commit_batch();
  };
  // Once S is in registers: mask invalid keys, scale into log2 units, row maxima of the tile.
  auto mask_scores = [&](int buf, float (&tile_max)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
    warpgroup_fence_operand(tSrS);
    tile_max[0] = tile_max[1] = kNegInf;
    CUTE_UNROLL
    for (int i = 0; i < size(tSrS); ++i) {
      const float s = ss.key_valid[buf][get<1>(tScS(i))] ? tSrS(i) * p.scale_log2 : kNegInf;
      tSrS(i) = s;
      tile_max[slot_of(i)] = fmaxf(tile_max[slot_of(i)], s);
    }
    CUTE_UNROLL
    for (int k = 0; k < 2; ++k) tile_max[k] = quad_max(tile_max[k]);
  };
  // P = 2^(S - m) into the tile's P buffer; adds this thread's share of the row sums to sum.
  auto write_p = [&](int buf, const float (&m)[2], float (&sum)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
    seesaw_write_p<Element>(tSrS, thr_s.partition_C(tile_p(buf)), m, sum);
  };
  float row_max[2], row_sum[2];
  // This warpgroup's O slice and row sums from maxima `from` to `to` (to >= from).
  auto rescale = [&](const float (&from)[2], const float (&to)[2]) CUTLASS_LAMBDA_FUNC_INLINE {
    seesaw_rescale(tOrO, row_sum, from, to);
  };
  // O_wg += P V_wg of buffer buf (one wgmma group)
  auto issue_pv = [&](int buf) CUTLASS_LAMBDA_FUNC_INLINE {
    Tensor tOrP = thr_o.partition_fragment_A(tile_p(buf));
    Tensor sVt = make_tensor(make_smem_ptr(ss.k[buf]), typename Base::SmemLayoutVt{});
    Tensor tOrV = thr_o.partition_fragment_B(local_tile(sVt, Shape<_256, _64>{}, make_coord(wg, 0)));
    issue_wgmma(mma_o, tOrP, tOrV, tOrO, false);
  };
  // The same, waited, then this warpgroup's release of the halves it read.
  auto pv = [&](int buf) CUTLASS_LAMBDA_FUNC_INLINE {
    issue_pv(buf);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrO);
    if (wg == 0) Barrier::arrive(&ss.empty[buf][0]);
    Barrier::arrive(&ss.empty[buf][1]);
  };
  auto load_max = [&](const float* from, float (&m)[2]) { seesaw_load_max(from, my_row0, m); };
  auto store_max = [&](float* to, const float (&m)[2]) { seesaw_store_max(to, my_row0, lane, m); };

  uint32_t q_phase = 0;  // parity of the next Q tile the producer loads
  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const Run run = run_of(req, sparse_key_count(p, req));
    const bool q_next = p.q_by_producer && req < part.end_req;  // the producer loads the next request's Q
    if (p.q_by_producer && req > part.begin_req) {
      Barrier::wait(&ss.q_full, q_phase);
      q_phase ^= 1;
    } else {
      load_q_tile<kD>(p, p.h_q / p.h_kv, ss.q, m_tile, kvh, req, tid);  // by the consumers' 256 threads
      named_barrier(kBarConsumers, 256);
    }
    row_max[0] = row_max[1] = kNegInf;
    row_sum[0] = row_sum[1] = 0.f;
    clear(tOrO);

    if (run.lo < run.hi) {
      if (wg == 0) {
        issue_qk(0);
        for (int a = run.lo; a < run.hi; a += 2) {
          float tile_max[2], m_a[2], m_b[2], sum_p[2] = {0.f, 0.f};
          warpgroup_wait<0>();  // S_A
          if (a + 2 >= run.hi && q_next) Barrier::arrive(&ss.q_empty);  // its last Q K^T of the request
          mask_scores(0, tile_max);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_a[k] = fmaxf(row_max[k], tile_max[k]);
          write_p(0, m_a, sum_p);
          store_max(max_a, m_a);
          named_barrier_unaligned(kBarPa, 256);
          rescale(row_max, m_a);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) row_sum[k] += sum_p[k];
          pv(0);
          named_barrier_unaligned(kBarPb, 256);
          load_max(max_b, m_b);
          rescale(m_a, m_b);
          pv(1);
          phase ^= 1;
          if (a + 2 < run.hi) issue_qk(0);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) row_max[k] = m_b[k];
        }
      } else {
        for (int a = run.lo; a < run.hi; a += 2) {
          float tile_max[2], m_a[2], m_b[2], sum_p[2] = {0.f, 0.f};
          issue_qk(1);
          warpgroup_wait<0>();  // S_B
          if (a + 2 >= run.hi && q_next) Barrier::arrive(&ss.q_empty);
          mask_scores(1, tile_max);
          named_barrier_unaligned(kBarPa, 256);
          load_max(max_a, m_a);
          rescale(row_max, m_a);
          issue_pv(0);  // P_A V_A; softmax B under it
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_b[k] = fmaxf(m_a[k], tile_max[k]);
          write_p(1, m_b, sum_p);
          store_max(max_b, m_b);
          // m_A re-read rather than held through softmax B (registers), and before this hand-off: past
          // it, WG0 may write the next pair's
          load_max(max_a, m_a);
          named_barrier_unaligned(kBarPb, 256);
          warpgroup_wait<0>();
          warpgroup_fence_operand(tOrO);
          Barrier::arrive(&ss.empty[0][1]);
          rescale(m_a, m_b);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) {
            row_sum[k] += sum_p[k];
            row_max[k] = m_b[k];
          }
          pv(1);
          phase ^= 1;
        }
      }
      // nothing is in flight here; saying so lets ptxas reuse S's registers in the epilogue
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);
    } else if (q_next) {
      Barrier::arrive(&ss.q_empty);
    }

    const RequestSplit split = request_split(p, part, req);
    // m_tile and kvh laundered: addresses derived from them were hoisted out of the request loop and spilled
    int out_m_tile = m_tile, out_kvh = kvh;
    asm volatile("" : "+r"(out_m_tile), "+r"(out_kvh));
    store_attention_output<Element, true, false, true, kPartialMax>(p, ss.row_sum, kBarEpilogue, tOrO, tOcO, row_max,
                                                                    row_sum, out_m_tile, out_kvh, req, split.slot,
                                                                    split.n_splits);
    named_barrier(kBarConsumers, 256);  // row_sum (and the consumers' Q tile) are reused by the next request
  }
#endif
}

template <typename Element, int kD>
cudaError_t launch_sparse_seesaw(const AttentionParams& p, int num_parts, cudaStream_t stream) {
  using Cfg = SparseSeesawConfig<Element, kD>;
  return p.max_accum != nullptr ? launch_tiled<Cfg>(mla_sparse_seesaw_kernel<Element, kD, true>, p, num_parts, stream)
                                : launch_tiled<Cfg>(mla_sparse_seesaw_kernel<Element, kD, false>, p, num_parts, stream);
}

}  // namespace flashmla_sm90
