// MLA attention for sm_90a: dense decode over a paged bf16/fp16 cache, and sparse attention over
// index lists (sparse prefill; sparse decode on a bf16 or an fp8_v32 cache); absorbed MLA, V = the
// first 512 dims of K. Gathered rows go to producer/consumer kernels (bf16: sparse_seesaw.cuh, fp8_v32:
// fp8_decode.cuh) unless FLASHMLA_SM90_SPARSE_SEESAW=0, which keeps them here; dense decode over an fp8_v32
// cache (KeySource::kPagedFp8) runs only on fp8_decode.cuh.
//
// Tiling. One CTA computes 64 query rows of one KV head — the s_q * h_q / h_kv rows that share it,
// s_q-major (row r is query token r / (h_q/h_kv), head kvh * (h_q/h_kv) + r % (h_q/h_kv)) — against
// the 64-token KV tiles of a contiguous run of (request, tile) pairs: its schedule part. The Q tile
// (64 x D, D = 576 or 512) and two KV tiles (64 x D) live in shared memory, swizzle-128B, K-major.
// V is read through a transposed (MN-major) view of the same KV tile: each KV byte is loaded once
// and feeds both GEMMs.
//
// Thread roles: 256 threads, two warpgroups. A 64 x 512 float32 output tile is 32768 registers —
// half the register file — so it is split by columns: warpgroup w owns O[:, 256w, 256w + 256)
// (128 registers per thread). For S = Q K^T warpgroup w computes tokens [32w, 32w + 32) of the tile
// (wgmma 64x32x16, A = Q and B = K from shared memory), so no MMA is done twice. Row maxima are
// exchanged through shared memory, each warpgroup stores its half of P (16-bit) in shared memory,
// and each computes O_w += P (64 x 64) V_w (64 x 256) (wgmma 64x256x16, both operands in shared
// memory). Both warpgroups hold identical running maxima, so their halves of O stay consistent.
//
// Pipeline: cp.async double buffering, one CTA barrier per tile. Once tile k has landed, tile k + 1
// is gathered into the other buffer while tile k is computed (one tile in flight; what bounds a tile
// is measured in docs/benchmarks/sm90-dense-decode.md), row by row:
// a token's row is one contiguous run of D * 2 bytes wherever its page is, so any page size works;
// 4 threads copy the 16-byte chunks of one row. Rows past the request's length are zero-filled and
// never read (NaN or garbage in unused slots cannot reach P * V, and block-table entries past the
// last used block are never dereferenced).
// Dense tiles inside one page (page_size a multiple of 64) come by TMA instead when the binding made
// a tensor map (use_tma): thread 0 issues one 64 x 64 box per slab on the buffer's mbarrier, and the
// value dims of rows past the length are zeroed in shared memory once the tile has landed.
//
// fp8_v32 (kIndexedFp8): the tile is the same bf16 tile, made by the consumers themselves between
// their wgmma issues and waits (the tensor cores run the GEMMs meanwhile). Iteration t, while
// buffer t % 2 is computed and buffer (t + 1) % 2 is free:
//   top     cp.async the RoPE part of tile t + 1; the barrier publishes tile t
//   QK(t) in flight:  dequantize half A of tile t + 1 (loaded into registers during PV(t - 1)) into
//                     the free buffer; load half B of tile t + 1
//   PV(t) in flight:  dequantize half B; load half A of tile t + 2; prefetch tile t + 3's rows to L2
// Registers carry half a row's payload per thread (18). Cycle budget per 64-token tile and SM:
// 64 x 512 values = 16384 pairs at 6 instructions (e4m3x2 -> f16x2, 2 x f16 -> f32, 2 FMUL, pack to
// bf16x2) = ~3100 warp instructions, ~800 issue cycles of the 4 schedulers, vs ~2200 cycles of
// tensor work for 64 query rows (64 x 64 x 1088 x 2 FLOP at ~4096 FLOP/cycle/SM): it only fits if
// it hides under the GEMMs. Measured (H100, docs/benchmarks/sm90-sparse.md): ~7 us per tile, issue
// slots 27% busy, latency bound (load waits, barriers). Tried and slower: a cp.async staging ring
// with one bf16 buffer and the dequantization between the GEMMs (+8%); integer-pipe dequantization
// (+17%: more instructions, and the hardware conversions are not the bound); a 2-CTA cluster for
// h_q > 64 where each CTA dequantizes half a tile for both through DSMEM (+37%: a cluster barrier
// per tile); a dequantizing producer warpgroup on sparse_seesaw.cuh's kernel (+15-20 % in three forms,
// docs/benchmarks/sm90-sparse.md, "Eighth session"). Since superseded by fp8_decode.cuh (a
// producer warpgroup dequantizing while the consumers compute one tile at a time: 2-5 % faster).
// Sparse decode plans cut every token's run into equal parts (none once the tokens fill the SMs).
//
// Split-KV: a request split across parts writes a normalized float32 partial output and a log2
// partial lse per split; the combine kernel merges them and applies attn_sink. A request with one
// split is finished here: 16-bit output, natural-log lse, attn_sink applied.
#pragma once

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_types.h>

#include "../common/device_utils.cuh"
#include "../common/params.h"
#include "decode_seesaw.cuh"
#include "epilogue.cuh"
#include "fp8_decode.cuh"
#include "fp8_v32.cuh"
#include "sparse_seesaw.cuh"
#include "tile_config.cuh"
#include "tile_copy.cuh"
#include "wgmma_issue.cuh"

namespace flashmla_sm90 {

using namespace cute;

// Sparse sources: keys come from index lists (invalid when < 0 or >= capacity, or past topk_length)
// and are masked per key; paged: from the block table, masked by length and the causal diagonal.
template <typename Element, int kD, KeySource kSource>
__global__ void __launch_bounds__(256, 1) mla_attention_kernel(const __grid_constant__ AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kSparse = kSource != KeySource::kPaged;
  constexpr bool kFp8 = kSource == KeySource::kIndexedFp8;
  static_assert(!kFp8 || (kD == 576 && sizeof(Element) == 2), "fp8_v32 rows hold 512 e4m3 + 64 bf16 dims");
  using CacheElement = std::conditional_t<kFp8, uint8_t, Element>;
  using Cfg = AttentionConfig<Element, kD>;
  using SmemLayoutK = typename Cfg::SmemLayoutK;
  constexpr float kNegInf = -INFINITY;
  constexpr int kChunks = kD * int(sizeof(Element)) / 16;

  extern __shared__ char smem_raw[];
  auto& ss = shared_storage<typename Cfg::SharedStorage>(smem_raw);

  const int tid = threadIdx.x, wg = tid / 128, wg_tid = tid % 128, lane = tid % 32;
  // 1-D grid (parts may exceed 65535, e.g. one per query token in sparse prefill), m-tile fastest so
  // the CTAs sharing a part's KV tiles run side by side.
  const TiledCta cta = tiled_cta(p);
  const int m_tile = cta.m_tile, kvh = cta.kvh;
  // The combine kernel (a programmatic dependent) may be dispatched now: it waits for this grid's
  // completion before reading the partials, so its launch overlaps this grid's work.
  launch_dependent_grids();
  const SchedulePart part = p.schedule[cta.part];
  if (part.end_req < part.begin_req) return;
  const int heads_per_kv = p.h_q / p.h_kv;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  // Dense tiles within one page (page_size a multiple of 64) come by TMA when the binding made a
  // tensor map: one thread issues a 64 x 64 box per 64-column slab (the hardware writes the
  // swizzle-128B layout) and everyone waits on the buffer's mbarrier. Far fewer issued instructions
  // than 18 cp.async per thread, and more bytes in flight (benchmarks/micro/cp_async_ingest.cu).
  const bool use_tma = kSource == KeySource::kPaged && p.use_tma;
  uint32_t kv_phase = 0;  // TMA: bit b is the parity of buffer b's next fill
  if (use_tma) {
    if (tid == 0) {
      Barrier::init(&ss.kv_full[0], 1);
      Barrier::init(&ss.kv_full[1], 1);
      cutlass::arch::fence_barrier_init();
    }
    __syncthreads();
  }

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

  // The two accumulator rows this thread holds (wgmma C layout: warp w of the warpgroup has rows
  // 16w..16w+15, lane l rows l/4 and l/4 + 8).
  // Accumulator value v of a thread sits in row my_row0 + 8 * ((v / 2) % 2): a compile-time slot.
  const int my_row0 = (wg_tid / 32) * 16 + lane / 4;
  auto slot_of = [](int v) { return (v >> 1) & 1; };

  // Gather: thread t copies chunks t%4, t%4+4, ... of row t/4.
  const int copy_row = tid / 4, copy_chunk0 = tid % 4;
  const CacheElement* kv = static_cast<const CacheElement*>(p.kv);
  const Element* q = static_cast<const Element*>(p.q);

  for (int req = part.begin_req; req <= part.end_req; ++req) {
    const int seqlen = !kSparse ? p.seqlens[req] : sparse_key_count(p, req);
    const int n_tiles = (seqlen + kTileTokens - 1) / kTileTokens;
    const int tile_lo = req == part.begin_req ? part.begin_tile : 0;
    const int tile_hi = req == part.end_req ? min(part.end_tile, n_tiles) : n_tiles;
    const RequestSplit split = request_split(p, part, req);

    // Where this thread's row of a tile lives (-1: past the length): the page (dense) or the slot
    // index as stored (sparse). The lookups for the next tiles are issued while a tile is computed;
    // an index is checked only where it is used (`usable`), since checking it here would make the
    // thread wait for the load at once (ncu: 12% of all stalls on that compare).
    auto row_source = [&](int tile) -> int {
      const int token = tile * kTileTokens + copy_row;
      if (token >= seqlen) return -1;
      if constexpr (kSparse) {
        return p.indices[req * p.idx_stride_b + kvh * p.idx_stride_h + token];
      } else {
        return p.block_table[req * p.bt_stride_b + token / p.page_size];
      }
    };
    auto usable = [&](int source) -> int {  // -1: no key to read (sparse: invalid when < 0 or >= capacity)
      return !kSparse || (source >= 0 && source < p.capacity) ? source : -1;
    };
    auto row_address = [&](int tile, int source) -> const CacheElement* {
      if (source < 0) return kv;
      if constexpr (kSparse) return kv + cache_slot_offset(p, source) + int64_t(kvh) * p.kv_stride_h;
      const int offset = (tile * kTileTokens + copy_row) % p.page_size;
      return kv + int64_t(source) * p.kv_stride_block + int64_t(offset) * p.kv_stride_page + int64_t(kvh) * p.kv_stride_h;
    };
    // The asynchronous part of a tile's gather: the whole row, or (fp8) its RoPE part; or (TMA) the
    // whole tile's boxes, by thread 0, whose row 0 `source` is the tile's page.
    auto load_kv_tile = [&](int tile, int source, int buf) {
      source = usable(source);
      if (use_tma) {
        if (tid == 0) load_tile_boxes<kD>(p, &ss.kv_full[buf], ss.k[buf], (tile * kTileTokens) % p.page_size, kvh, source);
        return;
      }
      if constexpr (kFp8) {
        load_rope_async(ss.k[buf], copy_row, copy_chunk0, row_address(tile, source), source >= 0);
      } else {
        load_tile_row<kChunks>(ss.k[buf], copy_row, copy_chunk0, source >= 0, row_address(tile, source));
      }
      if (kSparse && copy_chunk0 == 0) ss.key_valid[buf][copy_row] = source >= 0;
    };
    Fp8HalfRow fp8_half;  // kFp8: half a row of a coming tile, between its load and its dequantizing store
    auto fp8_load = [&](int tile, int source, int half) {
      source = usable(source);
      if constexpr (kFp8) fp8_half.load(row_address(tile, source), source >= 0, copy_chunk0, half);
    };
    auto fp8_store = [&](int buf, int half) {
      if constexpr (kFp8) fp8_half.store(ss.k[buf], copy_row, copy_chunk0, half);
    };
    auto fp8_prefetch = [&](int source) {
      source = usable(source);
      if constexpr (kFp8) {
        if (source >= 0) fp8_prefetch_l2(row_address(0, source), copy_chunk0);
      }
    };

    load_q_tile_rows<kChunks>(p, q, heads_per_kv, ss.q, m_tile, kvh, req, copy_row, copy_chunk0);
    if (tile_lo < tile_hi) {
      const int source = row_source(tile_lo);
      load_kv_tile(tile_lo, source, 0);
      if constexpr (kFp8) {  // the first tile is dequantized up front; half A of the second is loaded
        fp8_load(tile_lo, source, 0);
        fp8_store(0, 0);
        fp8_load(tile_lo, source, 1);
        fp8_store(0, 1);
      }
    }
    cp_async_commit();
    int next_source = tile_lo + 1 < tile_hi ? row_source(tile_lo + 1) : -1;
    if (kFp8 && tile_lo + 1 < tile_hi) fp8_load(tile_lo + 1, next_source, 0);
    // fp8: rows of tile + 3 are prefetched into L2 a whole iteration before their register loads
    int prefetch_source = -1;
    if (kFp8 && tile_lo + 2 < tile_hi) fp8_prefetch(row_source(tile_lo + 2));

    float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.f, 0.f};
    clear(tOrO);
    // The last key each of this thread's two rows may see (bottom-right causal: query token j sees
    // keys [0, seqlen - s_q + j]).
    int last_key[2];
    CUTE_UNROLL
    for (int k = 0; k < 2; ++k) {
      const int grow = m_tile * kTileRows + my_row0 + 8 * k;
      last_key[k] = p.causal ? min(seqlen - 1, seqlen - p.s_q + grow / heads_per_kv) : seqlen - 1;
    }

    for (int tile = tile_lo; tile < tile_hi; ++tile) {
      const int buf = (tile - tile_lo) & 1;
      cp_async_wait<0>();                        // this thread's rows of tile (and Q) have landed
      if (use_tma) {
        Barrier::wait(&ss.kv_full[buf], (kv_phase >> buf) & 1);
        kv_phase ^= 1u << buf;
        // TMA copies whole pages' rows: rows past the length may hold NaN, which 0 * NaN would carry
        // into P V; zero their value dims (the scores of those keys are masked by position).
        const int valid = seqlen - tile * kTileTokens;
        if (valid < kTileTokens && copy_row >= valid) {
          char* row = reinterpret_cast<char*>(ss.k[buf]);
          CUTE_UNROLL
          for (int c = copy_chunk0; c < kHeadDimV * int(sizeof(Element)) / 16; c += 4) {
            *reinterpret_cast<uint4*>(row + swizzled_chunk_offset(copy_row, c)) = make_uint4(0, 0, 0, 0);
          }
        }
      }
      cutlass::arch::fence_view_async_shared();  // cp.async / zeroing writes -> wgmma (async proxy) reads
      // One barrier per tile: every thread's rows are visible, and every warp has finished the
      // previous tile (its PV read the other buffer, P and row_max), so both may be overwritten.
      __syncthreads();
      const int source1 = next_source;  // of tile + 1
      if (tile + 1 < tile_hi) {
        load_kv_tile(tile + 1, source1, buf ^ 1);
        cp_async_commit();
        next_source = tile + 2 < tile_hi ? row_source(tile + 2) : -1;
      }
      if (kFp8) prefetch_source = tile + 3 < tile_hi ? row_source(tile + 3) : -1;

      // S = Q K^T for this warpgroup's 32 tokens
      Tensor sK = make_tensor(make_smem_ptr(ss.k[buf]), SmemLayoutK{});
      Tensor tSrK = thr_s.partition_fragment_B(local_tile(sK, Shape<_32, Int<kD>>{}, make_coord(wg, 0)));
      issue_wgmma(mma_s, tSrQ, tSrK, tSrS, true);
      if (kFp8 && tile + 1 < tile_hi) {  // under QK: half A of tile + 1 into the free buffer, load half B
        fp8_store(buf ^ 1, 0);
        fp8_load(tile + 1, source1, 1);
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);

      // mask (length, causal), scale into log2 units, tile row maxima
      float tile_max[2] = {kNegInf, kNegInf};
      const int tile_token0 = tile * kTileTokens + wg * 32;
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); ++i) {
        const int token = tile_token0 + get<1>(tScS(i));
        const bool attended = kSparse ? ss.key_valid[buf][wg * 32 + get<1>(tScS(i))] != 0
                                      : token <= last_key[slot_of(i)];
        const float s = attended ? tSrS(i) * p.scale_log2 : kNegInf;
        tSrS(i) = s;
        tile_max[slot_of(i)] = fmaxf(tile_max[slot_of(i)], s);
      }
      CUTE_UNROLL
      for (int k = 0; k < 2; ++k) {
        tile_max[k] = quad_max(tile_max[k]);
        if (lane % 4 == 0) ss.row_max[wg][my_row0 + 8 * k] = tile_max[k];
      }
      named_barrier(1, 256);
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
      // P: adjacent accumulator values are adjacent columns, stored as one 32-bit pair
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); i += 2) {
        const int k = slot_of(i);
        const float p0 = exp2f(tSrS(i) - m_use[k]), p1 = exp2f(tSrS(i + 1) - m_use[k]);
        row_sum[k] += p0 + p1;
        Element pair[2] = {Element(p0), Element(p1)};
        store_shared_u32(&tSsP(i), *reinterpret_cast<const uint32_t*>(pair));
      }
      if (rescale[0] != 1.f || rescale[1] != 1.f) {  // the running max rarely moves after a few tiles
        CUTE_UNROLL
        for (int i = 0; i < size(tOrO); ++i) tOrO(i) *= rescale[slot_of(i)];
      }
      cutlass::arch::fence_view_async_shared();  // P stores -> wgmma reads
      named_barrier(1, 256);

      // O_w += P V_w
      Tensor sVt = make_tensor(make_smem_ptr(ss.k[buf]), typename Cfg::SmemLayoutVt{});
      Tensor tOrV = thr_o.partition_fragment_B(local_tile(sVt, Shape<_256, _64>{}, make_coord(wg, 0)));
      issue_wgmma(mma_o, tOrP, tOrV, tOrO, false);
      if (kFp8 && tile + 1 < tile_hi) {  // under PV: half B of tile + 1, then load half A of tile + 2
        fp8_store(buf ^ 1, 1);
        if (tile + 2 < tile_hi) fp8_load(tile + 2, next_source, 0);
        fp8_prefetch(prefetch_source);
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(tOrO);
    }
    cp_async_wait<0>();

    store_attention_output<Element, kSparse>(p, ss.row_sum, 1, tOrO, tOcO, row_max, row_sum, m_tile, kvh, req,
                                             split.slot, split.n_splits);
    __syncthreads();  // Q tile and row_sum are reused by the next request
  }
#endif
}

template <typename Element, int kD, KeySource kSource>
cudaError_t launch_attention(const AttentionParams& p, int num_parts, cudaStream_t stream) {
  if constexpr (kSource == KeySource::kPagedFp8) {  // only the producer kernel has a block-table form
    static_assert(kD == 576, "fp8_v32 rows hold d_qk 576");
    return launch_fp8_decode<Element, true>(p, num_parts, stream);
  } else {
    if constexpr (kSource == KeySource::kPaged && kD == 576) {
      if (p.use_tma && p.seesaw) return launch_decode_seesaw<Element>(p, num_parts, stream);
    }
    if constexpr (kSource == KeySource::kIndexed) {
      if (p.sparse_seesaw) return launch_sparse_seesaw<Element, kD>(p, num_parts, stream);
    }
    if constexpr (kSource == KeySource::kIndexedFp8) {
      if (p.sparse_seesaw) return launch_fp8_decode<Element, false>(p, num_parts, stream);
    }
    return launch_tiled<AttentionConfig<Element, kD>>(mla_attention_kernel<Element, kD, kSource>, p, num_parts,
                                                      stream);
  }
}

}  // namespace flashmla_sm90
