// MLA decode for sm_90a over an fp8_v32 cache: token-sparse (each query token's keys from its index list) and
// dense (kDense: a request's keys [0, seqlen) through its block table, causal for s_q > 1). A producer
// warpgroup gathers and dequantizes the keys' rows into bf16 tiles while two consumer warpgroups compute on
// the previous tile. Both forms differ only in where a key's cache slot comes from and how a key is masked
// (sparse: a per-key validity byte; dense: each query row's last visible key). A dense request's 64-row
// query tile holds its s_q * h_q / h_kv rows s_q-major, as in kernel.cuh.
//
// Tiling. One CTA computes 64 query rows of one KV head against its schedule part's 64-key tiles, one tile
// at a time (Q 72 KB + two 72 KB bf16 tiles, swizzle-128B, K-major; V is the transposed view of a tile's
// first 512 dims; P of a tile lives in its RoPE slab once Q K^T of the tile has read it). Warpgroup w
// (w < 2) owns O[:, 256w, 256w + 256).
//
// Thread roles (384 threads; setmaxnreg: WG0 216 registers, WG1 168, producer 120 — at most the 3 x 168
// the CTA is launched with, or setmaxnreg.inc waits forever; ptxas would not compile the consumers' code
// above the launch budget with a 512-thread CTA, so a second producer warpgroup does not fit):
//   WG0: S = Q K^T (64 x 64), softmax, P into the tile's RoPE slab, O_0 += P V_0; Q K^T of the next tile
//        is issued under its own P V, so the tensor cores go from one to the other without a gap
//   WG1: O_1 += P V_1 once WG0 has published P and the tile's row maxima (mbarrier p_ready); before that
//        wait (kShare), a quarter of the next tile's dequantization: dims [256, 512) of token rows 32..63,
//        into the buffer the tile before has just left, from payload loaded a tile ahead (WG1 would
//        otherwise idle through WG0's Q K^T and softmax)
//   WG2: per tile, for its two 32-token rounds (thread t: token t / 4 + 32 r, fp8 chunks t % 4 + 4 j),
//        dequantizes the payload it loaded into registers during the tile before into the freed buffer
//        (kShare: all but WG1's quarter), then loads the next tile's (rows prefetched into L2 a tile
//        earlier, slots looked up a tile before that); RoPE by cp.async; (sparse) key validity bytes
// The two consumer roles run separate copies of the consumer body (a lambda per role), so that ptxas
// allocates each within its own budget; their barriers are unaligned (barrier.sync) for that reason.
// A buffer is handed over by two mbarriers: full (count 256: 128 cp.async completions + 128 producer
// arrivals after its dequantized stores, fenced for the async proxy; + 128 WG1 arrivals with kShare) and
// empty (count 256: both consumer warpgroups after their P V). kShare false
// (FLASHMLA_SM90_FP8_SHARED_DEQUANT=0) leaves all dequantization to the producer, for A/B measurements.
// Unlike the seesaw (sparse_seesaw.cuh), the consumers work on one tile at a time, so the producer always has
// a whole tile's compute time to refill the other buffer.
//
// Cycle budget per 64-key tile and SM (H100, ~4096 dense bf16 FLOP/cycle): Q K^T 4.7 MFLOP ~1150 cycles,
// P V 4.2 MFLOP ~1030 cycles, softmax between them on WG0's chain; the producer: 16384 pairs x 6
// instructions (e4m3x2 -> f16x2, 2 x f16 -> f32, 2 FMUL, pack) = ~3100 warp instructions per tile on its 4
// warps, one per scheduler. Measured (H100, docs/benchmarks/sm90-sparse.md, "Ninth session"): with the
// producer doing no loads and no dequantization the h128 s_q 2 row takes 361 us (the consumers' chain);
// loads and dequantization each add ~100 us, serially (one warp per scheduler cannot hide one behind the
// other); addresses by one multiply instead of a division per row took 13 % off, WG1's quarter another
// 4.5 % (h_q 128) and 1-2 % (h_q 16, 64), the sparse producer's next loads after both rounds' dequantization
// 2-3.5 % (twelfth session). Tried and slower: a
// 2-CTA cluster sharing the dequantization for h_q 65..128 (7e8cd75: each CTA dequantizing half the rows
// for both by st.async, 573-582 vs 529 us unpaired).
#pragma once

#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/detail/helper_macros.hpp>

#include "../common/device_utils.cuh"
#include "../common/params.h"
#include "epilogue.cuh"
#include "fp8_v32.cuh"
#include "seesaw_softmax.cuh"
#include "tile_config.cuh"
#include "tile_copy.cuh"
#include "wgmma_issue.cuh"

namespace flashmla_sm90 {

using namespace cute;

template <typename Element_>
struct Fp8DecodeConfig {
  using Element = Element_;
  static constexpr int kD = 576;
  using Base = AttentionConfig<Element, kD>;
  struct SharedStorage {
    alignas(1024) Element q[cosize_v<typename Base::SmemLayoutQ>];
    alignas(1024) Element k[2][cosize_v<typename Base::SmemLayoutK>];
    float row_max[2][kTileRows];        // per buffer: the running maxima after its tile (WG0 -> WG1)
    float row_sum[2][kTileRows];        // epilogue
    uint8_t key_valid[2][kTileTokens];  // per buffer: which keys are real
    alignas(8) uint64_t full[2];        // the buffer's tile has landed
    alignas(8) uint64_t empty[2];       // both consumers are done with it
    alignas(8) uint64_t p_ready[2];     // WG0 has written P and row_max of the buffer's tile
  };
  static constexpr int kThreads = 384;
  static constexpr int kSmemBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an sm_90 CTA may have");
};

// kShare: WG1 dequantizes dims [256, 512) of token rows 32..63 of every tile (its share), the producer the
// rest; else the producer all of it.
// kDense: keys from the block table (dense decode), else from index lists (sparse decode).
template <typename Element, bool kShare, bool kDense>
__global__ void __launch_bounds__(384, 1) mla_fp8_decode_kernel(const __grid_constant__ AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = Fp8DecodeConfig<Element>;
  using Base = typename Cfg::Base;
  constexpr int kD = Cfg::kD;
  using TiledMmaS = decltype(make_tiled_mma(SM90::GMMA::ss_op_selector<
      Element, Element, float, Shape<_64, _64, Int<kD>>, GMMA::Major::K, GMMA::Major::K>()));
  using Barrier = cutlass::arch::ClusterBarrier;
  constexpr float kNegInf = -INFINITY;
  constexpr int kBarEpilogue = 3, kBarConsumers = 4;
  // registers per thread by role; at most the 3 x 168 per thread the CTA was launched with
  constexpr int kScoreRegs = 216, kPvRegs = 168, kProducerRegs = 120;
  static_assert(kScoreRegs + kPvRegs + kProducerRegs <= 3 * 168, "setmaxnreg.inc would wait forever");
  constexpr int kRopeSlab = kHeadDimV * kTileTokens;  // element offset of a tile's RoPE slab

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
      // 128 cp.async completions + 128 producer arrivals (+ 128 of WG1 after its share)
      Barrier::init(&ss.full[b], kShare ? 384 : 256);
      Barrier::init(&ss.empty[b], 256);
      Barrier::init(&ss.p_ready[b], 128);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  // The tile range of request `req` in this part, and the request's key count.
  struct Run {
    int lo, hi, end_token, seqlen;
  };
  auto run_of = [&](int req) {
    Run r;
    r.seqlen = kDense ? p.seqlens[req] : sparse_key_count(p, req);
    const int n_tiles = (r.seqlen + kTileTokens - 1) / kTileTokens;
    r.lo = req == part.begin_req ? part.begin_tile : 0;
    r.hi = max(r.lo, req == part.end_req ? min(part.end_tile, n_tiles) : n_tiles);
    r.end_token = min(r.seqlen, r.hi * kTileTokens);
    return r;
  };

  auto usable = [&](int slot) { return slot >= 0 && slot < p.capacity; };
  // Where request req's keys are listed: its index list (sparse) or its block-table row (dense).
  auto key_list = [&](int req) -> const int32_t* {
    if constexpr (kDense) {
      return p.block_table + req * p.bt_stride_b;
    } else {
      return p.indices + req * p.idx_stride_b + kvh * p.idx_stride_h;
    }
  };
  // The cache slot of key `token` of a request (-1 past the run's end): its index as stored (sparse), or
  // block * page_size + offset from its block-table entry (dense). Either is read only when `usable`.
  auto key_slot = [&](const int32_t* keys, int token, int end_token) -> int {
    if (token >= end_token) return -1;
    if constexpr (kDense) {
      const uint32_t t = uint32_t(token), page = uint32_t(p.page_size);
      return __ldg(keys + t / page) * p.page_size + int(t % page);
    } else {
      return __ldg(keys + token);
    }
  };

  if (wg == 2) {
    // ---------------------------------------------------------------- producer
    cutlass::arch::warpgroup_reg_dealloc<kProducerRegs>();
    const int chunk0 = wg_tid % 4, row0 = wg_tid / 4;  // token rows row0 and row0 + 32 of a tile
    const uint8_t* kv = static_cast<const uint8_t*>(p.kv) + int64_t(kvh) * p.kv_stride_h;
    auto row_of = [&](int idx) {  // a cache row (the cache base for an unusable index: never read)
      return usable(idx) ? kv + cache_slot_offset(p, idx) : kv;
    };
    uint32_t it = 0;  // tiles done by this CTA: buffer it % 2, its use it / 2
    for (int req = part.begin_req; req <= part.end_req; ++req) {
      const Run run = run_of(req);
      if (run.lo >= run.hi) continue;
      const int32_t* keys = key_list(req);
      auto index_of = [&](int tile, int r) { return key_slot(keys, tile * kTileTokens + row0 + 32 * r, run.end_token); };
      // Each round r (token row row0 + 32 r) is two Fp8HalfRow (dims [0, 256) and [256, 512)). A tile's
      // payload is loaded into registers while the tile before it is dequantized, from rows that were
      // prefetched into L2 a tile earlier still, from indices loaded a tile before that.
      Fp8HalfRow raw[2][2];
      auto mine = [](int r, int h) { return !(kShare && r == 1 && h == 1); };  // else WG1's share
      auto load_round = [&](int r, int idx) CUTLASS_LAMBDA_FUNC_INLINE {
        CUTE_UNROLL
        for (int h = 0; h < 2; ++h) {
          if (mine(r, h)) raw[r][h].load(row_of(idx), usable(idx), chunk0, h);
        }
      };
      int cur[2], index[2][2];  // indices of tiles t and [t + 1, t + 2], per round
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r) {
        cur[r] = index_of(run.lo, r);
        index[0][r] = index_of(run.lo + 1, r);
        index[1][r] = index_of(run.lo + 2, r);
        load_round(r, cur[r]);
        fp8_prefetch_l2_lines(row_of(index[0][r]), chunk0);
      }
      for (int t = run.lo; t < run.hi; ++t, ++it) {
        const int buf = it & 1;
        Barrier::wait(&ss.empty[buf], ((it >> 1) & 1) ^ 1);  // the first use of a buffer passes at once
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          load_rope_async(ss.k[buf], row0 + 32 * r, chunk0, row_of(cur[r]), usable(cur[r]));
          if (!kDense && chunk0 == 0) ss.key_valid[buf][row0 + 32 * r] = usable(cur[r]);
        }
        cutlass::arch::cpasync_barrier_arrive_noinc(&ss.full[buf]);
        // Sparse: both rounds are dequantized before the next tile's loads are issued. Loads issued between
        // the rounds made round 1's dequantization wait for them (ncu: 15 % of the producer's samples on its
        // first payload register; 2.3-3.5 % faster without). Dense: between the rounds measured 2-3 % faster.
        constexpr bool kLoadsLast = !kDense;
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          CUTE_UNROLL
          for (int h = 0; h < 2; ++h) {
            if (mine(r, h)) raw[r][h].store(ss.k[buf], row0 + 32 * r, chunk0, h);
          }
          if (!kLoadsLast && t + 1 < run.hi) load_round(r, index[0][r]);
        }
        if (kLoadsLast && t + 1 < run.hi) {
          CUTE_UNROLL
          for (int r = 0; r < 2; ++r) load_round(r, index[0][r]);
        }
        cutlass::arch::fence_view_async_shared();  // dequantized stores -> the consumers' wgmma reads
        Barrier::arrive(&ss.full[buf]);
        CUTE_UNROLL
        for (int r = 0; r < 2; ++r) {
          fp8_prefetch_l2_lines(row_of(index[1][r]), chunk0);
          cur[r] = index[0][r];
          index[0][r] = index[1][r];
          index[1][r] = index_of(t + 3, r);
        }
      }
    }
    cp_async_wait<0>();
    return;
  }

  // ---------------------------------------------------------------- consumers
  // One body per role (kWg), so that ptxas allocates each warpgroup's code within its own budget.
  auto consumer = [&](auto kWg) CUTLASS_LAMBDA_FUNC_INLINE {
    TiledMmaS mma_s;
    typename Base::TiledMmaO mma_o;
    auto thr_s = mma_s.get_thread_slice(wg_tid);
    auto thr_o = mma_o.get_thread_slice(wg_tid);
    Tensor tSrS = partition_fragment_C(mma_s, Shape<_64, _64>{});
    Tensor tOrO = partition_fragment_C(mma_o, Shape<_64, _256>{});
    Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<_64, _64>{}));
    Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<_64, _256>{}));
    const int my_row0 = (wg_tid / 32) * 16 + lane / 4;  // wgmma C layout: rows my_row0, my_row0 + 8
    auto tile_p = [&](int buf) {
      return make_tensor(make_smem_ptr(ss.k[buf] + kRopeSlab), typename Base::SmemLayoutP{});
    };
    // S = Q K^T of buffer buf, once it has landed (one wgmma group)
    auto issue_qk = [&](int buf, uint32_t parity) CUTLASS_LAMBDA_FUNC_INLINE {
      Barrier::wait(&ss.full[buf], parity);
      // operand descriptors made from opaque pointers after the wait: made earlier, they would be held
      // (and spilled) across it
      Element* q_smem = ss.q;
      Element* k_smem = ss.k[buf];
      asm volatile("" : "+l"(q_smem), "+l"(k_smem));
      Tensor tSrQ = thr_s.partition_fragment_A(make_tensor(make_smem_ptr(q_smem), typename Base::SmemLayoutQ{}));
      Tensor tSrK = thr_s.partition_fragment_B(make_tensor(make_smem_ptr(k_smem), typename Base::SmemLayoutK{}));
      issue_wgmma(mma_s, tSrQ, tSrK, tSrS, true);
    };
    // O_wg += P V_wg of buffer buf (one wgmma group)
    auto issue_pv = [&](int buf) CUTLASS_LAMBDA_FUNC_INLINE {
      Tensor tOrP = thr_o.partition_fragment_A(tile_p(buf));
      Tensor sVt = make_tensor(make_smem_ptr(ss.k[buf]), typename Base::SmemLayoutVt{});
      Tensor tOrV = thr_o.partition_fragment_B(local_tile(sVt, Shape<_256, _64>{}, make_coord(decltype(kWg)::value, 0)));
      issue_wgmma(mma_o, tOrP, tOrV, tOrO, false);
    };
    auto release = [&](int buf) { Barrier::arrive(&ss.empty[buf]); };  // done with a buffer
    float row_max[2], row_sum[2];
    uint32_t it = 0;  // as the producer's
    for (int req = part.begin_req; req <= part.end_req; ++req) {
      const Run run = run_of(req);
      load_q_tile<kD>(p, p.h_q / p.h_kv, ss.q, m_tile, kvh, req, tid);  // by the consumers' 256 threads
      named_barrier_unaligned(kBarConsumers, 256);
      row_max[0] = row_max[1] = kNegInf;
      row_sum[0] = row_sum[1] = 0.f;
      clear(tOrO);

      if constexpr (decltype(kWg)::value == 0) {
        // dense: the last key each of this thread's two rows sees (bottom-right causal: query token j sees
        // keys [0, seqlen - s_q + j]); it also masks the keys past seqlen in the last tile
        int last_key[2];
        CUTE_UNROLL
        for (int k = 0; k < 2; ++k) {
          const int grow = m_tile * kTileRows + my_row0 + 8 * k;
          last_key[k] = p.causal ? min(run.seqlen - 1, run.seqlen - p.s_q + grow / (p.h_q / p.h_kv)) : run.seqlen - 1;
        }
        if (run.lo < run.hi) issue_qk(it & 1, (it >> 1) & 1);
        for (int t = run.lo; t < run.hi; ++t, ++it) {
          const int buf = it & 1;
          warpgroup_wait<0>();  // S of this tile
          warpgroup_fence_operand(tSrS);
          // mask invalid keys, scale into log2 units, new running maxima
          float m_new[2] = {row_max[0], row_max[1]}, tile_max[2] = {kNegInf, kNegInf};
          CUTE_UNROLL
          for (int i = 0; i < size(tSrS); ++i) {
            const int col = get<1>(tScS(i));
            const bool attended = kDense ? t * kTileTokens + col <= last_key[seesaw_slot_of(i)] : ss.key_valid[buf][col] != 0;
            const float s = attended ? tSrS(i) * p.scale_log2 : kNegInf;
            tSrS(i) = s;
            tile_max[seesaw_slot_of(i)] = fmaxf(tile_max[seesaw_slot_of(i)], s);
          }
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) m_new[k] = fmaxf(m_new[k], quad_max(tile_max[k]));
          float sum_p[2] = {0.f, 0.f};
          seesaw_write_p<Element>(tSrS, thr_s.partition_C(tile_p(buf)), m_new, sum_p);
          seesaw_store_max(ss.row_max[buf], my_row0, lane, m_new);
          Barrier::arrive(&ss.p_ready[buf]);
          seesaw_rescale(tOrO, row_sum, row_max, m_new);
          CUTE_UNROLL
          for (int k = 0; k < 2; ++k) {
            row_sum[k] += sum_p[k];
            row_max[k] = m_new[k];
          }
          issue_pv(buf);
          if (t + 1 < run.hi) {
            issue_qk(buf ^ 1, ((it + 1) >> 1) & 1);
            warpgroup_wait<1>();  // this tile's P V (groups complete in order)
          } else {
            warpgroup_wait<0>();
          }
          warpgroup_fence_operand(tOrO);
          release(buf);
        }
      } else {
        // WG1's share of tile t + 1 is dequantized at the top of iteration t, into the buffer tile t - 1 has
        // just left (WG0's release of it comes with its Q K^T of tile t), while WG0 computes S and P of
        // tile t; the share of tile t + 2 is then loaded into registers, a whole iteration ahead.
        const int chunk0 = wg_tid % 4, share_row = 32 + wg_tid / 4;
        auto row_of = [&](int idx) {
          const uint8_t* kv = static_cast<const uint8_t*>(p.kv) + int64_t(kvh) * p.kv_stride_h;
          return usable(idx) ? kv + cache_slot_offset(p, idx) : kv;
        };
        const int32_t* keys = key_list(req);
        auto share_index = [&](int tile) { return key_slot(keys, tile * kTileTokens + share_row, run.end_token); };
        Fp8HalfRow staged;
        auto put_share = [&](uint32_t tile_it) CUTLASS_LAMBDA_FUNC_INLINE {  // into the buffer of tile #tile_it
          const int b = tile_it & 1;
          Barrier::wait(&ss.empty[b], ((tile_it >> 1) & 1) ^ 1);
          staged.store(ss.k[b], share_row, chunk0, 1);
          cutlass::arch::fence_view_async_shared();
          Barrier::arrive(&ss.full[b]);
        };
        int index_after = -1;  // of tile t + 2
        if (kShare && run.lo < run.hi) {
          int idx = share_index(run.lo);
          staged.load(row_of(idx), usable(idx), chunk0, 1);
          put_share(it);
          idx = share_index(run.lo + 1);
          if (run.lo + 1 < run.hi) staged.load(row_of(idx), usable(idx), chunk0, 1);
          index_after = share_index(run.lo + 2);
        }
        for (int t = run.lo; t < run.hi; ++t, ++it) {
          const int buf = it & 1;
          if (kShare && t + 1 < run.hi) {
            put_share(it + 1);
            if (t + 2 < run.hi) staged.load(row_of(index_after), usable(index_after), chunk0, 1);
            index_after = share_index(t + 3);
          }
          Barrier::wait(&ss.p_ready[buf], (it >> 1) & 1);
          float m_new[2];
          seesaw_load_max(ss.row_max[buf], my_row0, m_new);
          seesaw_rescale(tOrO, row_sum, row_max, m_new);  // row_sum stays 0: WG0 holds the sums
          row_max[0] = m_new[0];
          row_max[1] = m_new[1];
          issue_pv(buf);
          warpgroup_wait<0>();
          warpgroup_fence_operand(tOrO);
          release(buf);
        }
      }
      // nothing is in flight here; saying so lets ptxas reuse S's registers in the epilogue
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);

      const RequestSplit split = request_split(p, part, req);
      int out_m_tile = m_tile, out_kvh = kvh;
      asm volatile("" : "+r"(out_m_tile), "+r"(out_kvh));
      store_attention_output<Element, !kDense, true>(p, ss.row_sum, kBarEpilogue, tOrO, tOcO, row_max, row_sum, out_m_tile,
                                            out_kvh, req, split.slot, split.n_splits);
      named_barrier_unaligned(kBarConsumers, 256);  // Q tile and row_sum are reused by the next request
    }
  };
  if (wg == 0) {
    cutlass::arch::warpgroup_reg_alloc<kScoreRegs>();
    consumer(Int<0>{});
  } else {
    cutlass::arch::warpgroup_reg_alloc<kPvRegs>();
    consumer(Int<1>{});
  }
#endif
}

template <typename Element, bool kDense>
cudaError_t launch_fp8_decode(const AttentionParams& p, int num_parts, cudaStream_t stream) {
  using Cfg = Fp8DecodeConfig<Element>;
  if (p.fp8_shared_dequant) return launch_tiled<Cfg>(mla_fp8_decode_kernel<Element, true, kDense>, p, num_parts, stream);
  return launch_tiled<Cfg>(mla_fp8_decode_kernel<Element, false, kDense>, p, num_parts, stream);
}

}  // namespace flashmla_sm90
