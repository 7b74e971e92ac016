// Plain-C parameter blocks shared by the kernels and the torch binding (no torch, no CuTe here).
#pragma once
#include <cuda.h>  // CUtensorMap

#include <cstdint>

namespace flashmla_sm90 {

// One row of the split-KV schedule (int32 x 8), written by the plan kernel, read by the decode
// kernel. A "part" is the work of one CTA column: a contiguous run of (request, 64-token tile).
struct SchedulePart {
  int32_t begin_req;       // first request of this part
  int32_t begin_tile;      // first 64-token tile within begin_req
  int32_t end_req;         // last request (inclusive); end_req < begin_req means no work
  int32_t end_tile;        // one past the last tile within end_req
  int32_t begin_slot;      // partial-output slot of begin_req's split (later requests start at their first)
  int32_t combine_req;     // uniform plans: the split request whose first part this is, else -1 (the combine's
                           // row of this part); unused by the other plans
  int32_t pad1, pad2;
};
static_assert(sizeof(SchedulePart) == 32, "the plan buffer is int32 [num_parts, 8]");

// Where a KV tile's rows come from: a block table (dense decode) or index lists (sparse), over a cache of
// d_qk 16-bit values or of fp8_v32 rows (656 bytes: e4m3 latent, scales, bf16 RoPE).
enum class KeySource { kPaged, kIndexed, kIndexedFp8, kPagedFp8 };

constexpr int kTileTokens = 64;       // tokens per KV tile (the scheduling unit), independent of page size
constexpr int kTileRows = 64;         // query rows per CTA (s_q * h_q / h_kv rows of one KV head)
constexpr int kHeadDimV = 512;
constexpr int kRequestOverheadTiles = 1;  // scheduling cost of starting a request (Q load, epilogue)

// Decode over a paged cache, and (kSparse) token-sparse attention over index lists. Sparse prefill
// is the sparse form with one "request" per query token: q [s_q, h_q, d] is read as [s_q, 1, h_q, d].
struct AttentionParams {
  const void* q;              // [b, s_q, h_q, d_qk]
  const void* kv;             // [num_blocks, page_size, h_kv, d_qk] (sparse prefill: [s_kv, 1, h_kv, d_qk])
  const int32_t* block_table; // [b, max_blocks] (dense)
  const int32_t* seqlens;     // [b] (dense)
  const int32_t* indices;     // sparse: [b, h_kv, topk] absolute slots (block * page_size + offset)
  const int32_t* topk_length; // sparse: [b] or nullptr
  float* max_logits;          // sparse prefill: [b, h_q] or nullptr
  int64_t idx_stride_b, idx_stride_h;
  int topk;                   // sparse: keys per request before topk_length
  int64_t capacity;           // sparse and fp8_v32: a slot is read only when 0 <= slot < capacity
  const float* attn_sink;     // [h_q] or nullptr
  const SchedulePart* schedule;
  const int32_t* num_splits;  // [b + 1] exclusive prefix of splits per request
  void* out;                  // [b, s_q, h_q, 512]
  float* lse;                 // natural log, element (b, h, j) at lse_stride_b * b + lse_stride_h * h + j * lse_stride_s
  int64_t lse_stride_b, lse_stride_h, lse_stride_s;
  float* o_accum;             // [slots, h_kv, rows, 512] fp32, normalized partial outputs
  float* lse_accum;           // [slots, h_kv, rows], log2 domain, -inf when empty
  int64_t q_stride_b, q_stride_s, q_stride_h;
  int64_t kv_stride_block, kv_stride_page, kv_stride_h;  // in cache elements (bytes for fp8_v32)
  int64_t kv_slot_stride;     // slot-addressed (sparse, fp8_v32): kv_stride_page when the pages are contiguous
                              // (slot i at i x it), else 0
  int64_t bt_stride_b;
  int64_t out_stride_b, out_stride_s, out_stride_h;
  int batch, s_q, h_q, h_kv, page_size;
  int rows;                   // s_q * h_q / h_kv: query rows per KV head
  float scale_log2;           // softmax_scale * log2(e)
  bool causal;
  // Dense decode with page_size a multiple of 64: the cache as a TMA tensor (d_qk, page_size, h_kv,
  // num_blocks), boxes of 64 x 64 x 1 x 1 with the 128-byte swizzle; use_tma false: cp.async gather.
  // seesaw: d_qk 576 TMA tiles go to attention/decode_seesaw.cuh (the binding says when).
  bool use_tma;
  bool seesaw;
  // sparse_seesaw: indexed rows go to the producer/consumer kernels (bf16: attention/sparse_seesaw.cuh,
  // fp8_v32: attention/fp8_decode.cuh)
  bool sparse_seesaw;
  // fp8_v32 on fp8_decode.cuh: its PV-only warpgroup dequantizes a quarter of every tile
  // (FLASHMLA_SM90_FP8_SHARED_DEQUANT=0: the producer all of it, for A/B measurements)
  bool fp8_shared_dequant;
  // sparse prefill (sparse_seesaw.cuh): every query token gathers from the same kv, so its rows are kept in
  // the L2 (evict_last) while each token's Q, read once, streams through (evict_first)
  bool l2_keep_kv;
  // sparse_seesaw.cuh: the producer loads the Q tile of each request after a part's first under the consumers'
  // last P V and epilogue of the request before (false: the consumers load every one at the request's start)
  bool q_by_producer;
  CUtensorMap kv_tma;
  float* max_accum;           // split sparse prefill: [slots, h_kv, rows] partial row maxima (log2 units), or nullptr
};

struct PlanParams {
  const int32_t* seqlens;     // [b] (dense) or per-request work lengths (sparse: topk or topk_length)
  SchedulePart* schedule;     // [num_parts]
  int32_t* num_splits;        // [b + 1]
  int batch, num_parts;
  bool deterministic;         // one part per request, no split: batch invariant
  int splits_per_request;     // > 0: every request cut into this many equal parts (num_parts = batch x it;
                              // sparse decode, where every run is topk keys); 0: balanced by cost
  int uniform_tiles;          // > 0: every request is this many tiles (sparse prefill: topk), cut into num_parts
                              // equal runs at even tiles; slots only for split requests (compact: at most
                              // 2 x num_parts), each split request named by its first part (combine_req)
};

struct CombineParams {
  const float* o_accum;
  const float* lse_accum;
  const float* max_accum;     // nullptr, or the partial row maxima, merged into max_logits
  const int32_t* num_splits;
  const SchedulePart* by_part;  // nullptr: a CTA row per request; else per schedule part (its combine_req)
  const float* attn_sink;
  void* out;
  float* lse;
  float* max_logits;          // [b, h_q] when max_accum is given
  int64_t out_stride_b, out_stride_s, out_stride_h;
  int batch, s_q, h_q, h_kv, rows;
  int num_parts;              // rows of by_part
  bool programmatic;          // launch as a programmatic dependent of the attention kernel (PDL)
  bool few_splits;            // the plan averages at most two splits per request (combine.cu)
};

}  // namespace flashmla_sm90
