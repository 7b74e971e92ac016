// Torch binding of the sm90 kernels: tensor checks the contract layer cannot see (device, arch,
// int32 ranges), allocation of outputs and split-KV workspaces, and the launches.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cstdlib>
#include <cstring>
#include <limits>

#include "common/api.h"
#include "common/tensor_map.h"

namespace fm = flashmla_sm90;

namespace {

#define CHECK_CUDA_LAUNCH(expr)                                                                    \
  do {                                                                                             \
    cudaError_t err_ = (expr);                                                                     \
    TORCH_CHECK(err_ == cudaSuccess, "flashmla_sm90: ", #expr, " failed: ", cudaGetErrorString(err_)); \
  } while (0)

int num_sms(const torch::Device& device) {
  return at::cuda::getDeviceProperties(device.index())->multiProcessorCount;
}

fm::DType dtype_of(const torch::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf,
              "flashmla_sm90: q must be bfloat16 or float16");
  return t.scalar_type() == torch::kBFloat16 ? fm::DType::kBF16 : fm::DType::kFP16;
}

void check_sm90(const torch::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), "flashmla_sm90: tensors must be on a CUDA device");
  auto* props = at::cuda::getDeviceProperties(t.device().index());
  TORCH_CHECK(props->major == 9 && props->minor == 0, "flashmla_sm90: needs an sm_90 GPU, got sm_",
              props->major, props->minor);
}

}  // namespace

// -> (schedule int32 [num_parts, 8], num_splits int32 [b + 1])
std::vector<torch::Tensor> plan(torch::Tensor seqlens, int64_t num_parts, bool deterministic,
                                int64_t splits_per_request) {
  check_sm90(seqlens);
  c10::cuda::CUDAGuard guard(seqlens.device());
  const int64_t b = seqlens.size(0);
  auto opts = seqlens.options().dtype(torch::kInt32);
  // deterministic: each request whole, one part each (num_parts <= 0) or grouped into num_parts parts
  if (deterministic) num_parts = std::max<int64_t>(1, std::min<int64_t>(num_parts > 0 ? num_parts : b, b));
  if (!deterministic && splits_per_request > 0) num_parts = std::max<int64_t>(b, 1) * splits_per_request;
  auto schedule = torch::empty({num_parts, 8}, opts);
  auto num_splits = torch::empty({b + 1}, opts);
  if (b == 0) {
    num_splits.zero_();
    schedule.fill_(0);
    schedule.select(1, 0).fill_(1);  // empty parts
    return {schedule, num_splits};
  }
  TORCH_CHECK(deterministic || splits_per_request > 0 || b <= 25000,
              "flashmla_sm90: a split-KV plan serves at most 25000 requests "
              "(its prefix sums live in shared memory); got ", b, ". Use deterministic=True or smaller batches.");
  fm::PlanParams p{};
  p.seqlens = seqlens.data_ptr<int32_t>();
  p.schedule = reinterpret_cast<fm::SchedulePart*>(schedule.data_ptr<int32_t>());
  p.num_splits = num_splits.data_ptr<int32_t>();
  p.batch = int(b);
  p.num_parts = int(num_parts);
  p.deterministic = deterministic;
  p.splits_per_request = deterministic ? 0 : int(splits_per_request);
  CHECK_CUDA_LAUNCH(fm::launch_plan(p, at::cuda::getCurrentCUDAStream()));
  return {schedule, num_splits};
}

namespace {

// The sparse prefill's plan when whole tokens would leave CTAs idle: n tokens of `tiles` tiles each cut into
// num_parts equal runs (plan.cu, uniform plans); slots only for the split tokens (at most 2 x num_parts).
std::vector<torch::Tensor> uniform_plan(const torch::Tensor& like, int64_t n, int64_t tiles, int64_t num_parts) {
  auto opts = like.options().dtype(torch::kInt32);
  auto schedule = torch::empty({num_parts, 8}, opts);
  auto num_splits = torch::empty({n + 1}, opts);
  fm::PlanParams p{};
  p.schedule = reinterpret_cast<fm::SchedulePart*>(schedule.data_ptr<int32_t>());
  p.num_splits = num_splits.data_ptr<int32_t>();
  p.batch = int(n);
  p.num_parts = int(num_parts);
  p.uniform_tiles = int(tiles);
  CHECK_CUDA_LAUNCH(fm::launch_plan(p, at::cuda::getCurrentCUDAStream()));
  return {schedule, num_splits};
}

}  // namespace

// Environment switches (A/B measurements, opt-ins): the variable equals `value`.
bool env_equals(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

// An fp8_v32 cache as the fp8 kernels read it: 656-byte rows (d_qk 576) loaded by 16-byte vectors.
void check_fp8_v32_cache(const torch::Tensor& kv, int64_t d) {
  TORCH_CHECK(kv.size(3) == 656 && d == 576, "flashmla_sm90: an fp8_v32 cache has 656-byte rows (d_qk 576)");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(kv.data_ptr()) % 16 == 0 && kv.stride(0) % 16 == 0 &&
              kv.stride(1) % 16 == 0 && kv.stride(2) % 16 == 0,
              "flashmla_sm90: fp8_v32 cache rows must start at 16-byte aligned addresses (block, slot and "
              "head strides multiples of 16 bytes)");
}

// Slot-addressed caches (sparse, fp8_v32): how many slots, checked to fit the kernels' int32 slots.
int64_t cache_capacity(const torch::Tensor& kv) {
  const int64_t capacity = kv.size(0) * kv.size(1);
  TORCH_CHECK(capacity <= std::numeric_limits<int32_t>::max(), "flashmla_sm90: the cache holds more than 2^31 slots");
  return capacity;
}

// Contiguous pages: a slot's row is one multiply away (FLASHMLA_SM90_SLOT_STRIDE=0: the division form, for A/B
// measurements; read per call).
int64_t kv_slot_stride(const torch::Tensor& kv) {
  return kv.stride(0) == kv.size(1) * kv.stride(1) && !env_equals("FLASHMLA_SM90_SLOT_STRIDE", "0") ? kv.stride(1) : 0;
}

// The paged cache as a TMA tensor (AttentionParams::kv_tma) when its tiles can come by TMA: page_size a
// multiple of 64 (a 64-token tile inside one page), 16-byte aligned base and strides. False otherwise
// (or with FLASHMLA_SM90_TMA=0, for A/B measurements): the kernel gathers rows with cp.async.
bool make_kv_tensor_map(const torch::Tensor& kv, CUtensorMap* map) {
  static const bool tma_off = env_equals("FLASHMLA_SM90_TMA", "0");
  if (tma_off) return false;
  const int64_t es = kv.element_size(), page = kv.size(1), h_kv = kv.size(2), d = kv.size(3);
  if (page % fm::kTileTokens != 0 || reinterpret_cast<uintptr_t>(kv.data_ptr()) % 16 != 0 || kv.stride(3) != 1) {
    return false;
  }
  // strides of the outer dims in bytes; a dim of size 1 may carry any stride, so give it a legal one
  const int64_t page_b = kv.stride(1) * es;
  const int64_t head_b = h_kv == 1 ? page_b * page : kv.stride(2) * es;
  const int64_t block_b = kv.size(0) == 1 ? head_b * h_kv : kv.stride(0) * es;
  for (int64_t s : {page_b, head_b, block_b}) {
    if (s <= 0 || s % 16 != 0 || s >= (int64_t(1) << 40)) return false;
  }
  const fm::TensorMapEncode encode = fm::tensor_map_encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[4] = {cuuint64_t(d), cuuint64_t(page), cuuint64_t(h_kv), cuuint64_t(kv.size(0))};
  const cuuint64_t strides[3] = {cuuint64_t(page_b), cuuint64_t(head_b), cuuint64_t(block_b)};
  const cuuint32_t box[4] = {64, cuuint32_t(fm::kTileTokens), 1, 1}, unit[4] = {1, 1, 1, 1};
  const auto type = kv.scalar_type() == torch::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return encode(map, type, 4, kv.data_ptr(), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Merges the splits of the requests an attention launch left split (their normalized partials and log2
// lse in p's workspace), applies attn_sink, and writes p's outputs.
// by_part: the plan is a uniform one (one combine row per schedule part, see plan.cu).
void combine(const fm::AttentionParams& p, int64_t num_parts, fm::DType dtype, cudaStream_t stream,
             bool by_part = false) {
  fm::CombineParams c{};
  c.o_accum = p.o_accum; c.lse_accum = p.lse_accum; c.num_splits = p.num_splits; c.attn_sink = p.attn_sink;
  c.max_accum = p.max_accum; c.max_logits = p.max_logits;
  c.by_part = by_part ? p.schedule : nullptr;
  c.num_parts = int(num_parts);
  c.out = p.out; c.lse = p.lse;
  c.out_stride_b = p.out_stride_b; c.out_stride_s = p.out_stride_s; c.out_stride_h = p.out_stride_h;
  c.batch = p.batch; c.s_q = p.s_q; c.h_q = p.h_q; c.h_kv = p.h_kv; c.rows = p.rows;
  static const bool pdl_off = env_equals("FLASHMLA_SM90_PDL", "0");  // a plain launch, for A/B measurements
  c.programmatic = !pdl_off;
  c.few_splits = num_parts <= 2 * int64_t(p.batch);
  CHECK_CUDA_LAUNCH(fm::launch_combine(c, dtype, stream));
}

int64_t default_num_parts(torch::Tensor like, int64_t h_kv, int64_t rows) {
  const int64_t m_tiles = (rows + fm::kTileRows - 1) / fm::kTileRows;
  return std::max<int64_t>(1, num_sms(like.device()) / (h_kv * m_tiles));
}

// q [b, s_q, h_q, d], kv [num_blocks, page_size, h_kv, d] 16-bit or [num_blocks, page_size, 1, 656] uint8
// (fp8_v32, bf16 q) -> (out [b, s_q, h_q, 512], lse [b, h_q, s_q] float32)
std::vector<torch::Tensor> dense_decode(torch::Tensor q, torch::Tensor kv, torch::Tensor block_table,
                                        torch::Tensor seqlens, torch::Tensor schedule, torch::Tensor num_splits,
                                        double softmax_scale, bool causal, c10::optional<torch::Tensor> attn_sink) {
  check_sm90(q);
  c10::cuda::CUDAGuard guard(q.device());
  const auto dtype = dtype_of(q);
  const int64_t b = q.size(0), s_q = q.size(1), h_q = q.size(2), d = q.size(3);
  const int64_t h_kv = kv.size(2);
  auto out = torch::empty({b, s_q, h_q, fm::kHeadDimV}, q.options());
  auto lse = torch::empty({b, h_q, s_q}, q.options().dtype(torch::kFloat32));
  if (b == 0) return {out, lse};
  const int64_t rows = s_q * h_q / h_kv;
  const int64_t num_parts = schedule.size(0);
  TORCH_CHECK(num_parts + 1 <= 1024, "flashmla_sm90: the combine kernel merges at most 1024 splits per request");
  for (auto s : {q.stride(0), q.stride(1), q.stride(2), block_table.stride(0)}) {
    TORCH_CHECK(s <= std::numeric_limits<int32_t>::max(), "flashmla_sm90: a stride exceeds int32");
  }
  // split-KV workspace: at most one extra split per part beyond one per request
  const int64_t slots = b + num_parts;
  auto o_accum = torch::empty({slots, h_kv, rows, fm::kHeadDimV}, q.options().dtype(torch::kFloat32));
  auto lse_accum = torch::empty({slots, h_kv, rows}, q.options().dtype(torch::kFloat32));

  fm::AttentionParams p{};
  p.q = q.data_ptr();
  p.kv = kv.data_ptr();
  p.block_table = block_table.data_ptr<int32_t>();
  p.seqlens = seqlens.data_ptr<int32_t>();
  p.attn_sink = attn_sink.has_value() ? attn_sink->data_ptr<float>() : nullptr;
  p.schedule = reinterpret_cast<const fm::SchedulePart*>(schedule.data_ptr<int32_t>());
  p.num_splits = num_splits.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.o_accum = o_accum.data_ptr<float>();
  p.lse_accum = lse_accum.data_ptr<float>();
  p.q_stride_b = q.stride(0); p.q_stride_s = q.stride(1); p.q_stride_h = q.stride(2);
  p.kv_stride_block = kv.stride(0); p.kv_stride_page = kv.stride(1); p.kv_stride_h = kv.stride(2);
  p.bt_stride_b = block_table.stride(0);
  p.out_stride_b = out.stride(0); p.out_stride_s = out.stride(1); p.out_stride_h = out.stride(2);
  p.lse_stride_b = h_q * s_q; p.lse_stride_h = s_q; p.lse_stride_s = 1;
  p.batch = int(b); p.s_q = int(s_q); p.h_q = int(h_q); p.h_kv = int(h_kv); p.page_size = int(kv.size(1));
  p.rows = int(rows);
  p.scale_log2 = float(softmax_scale * 1.4426950408889634);
  p.causal = causal;
  const bool fp8 = kv.scalar_type() == torch::kUInt8;
  if (fp8) {  // fp8_v32: the producer kernel (attention/fp8_decode.cuh) reads rows by slot
    check_fp8_v32_cache(kv, d);
    p.capacity = cache_capacity(kv);
    p.kv_slot_stride = kv_slot_stride(kv);
    p.fp8_shared_dequant = !env_equals("FLASHMLA_SM90_FP8_SHARED_DEQUANT", "0");
  } else {
    p.use_tma = make_kv_tensor_map(kv, &p.kv_tma);
    // The seesaw kernel (attention/decode_seesaw.cuh; FLASHMLA_SM90_SEESAW=0 turns it off, for A/B, read per
    // call): d_qk 576 over TMA tiles when a KV head has more than one 64-row query tile (the compute-bound
    // shapes) and the plan's parts average at least half a request (it pays a pair's prologue and an odd
    // tile's phantom per part: slower on b8-h128-4k's short parts).
    p.seesaw = !env_equals("FLASHMLA_SM90_SEESAW", "0") && d == 576 && rows > fm::kTileRows && 2 * b >= num_parts;
  }
  const auto source = fp8 ? fm::KeySource::kPagedFp8 : fm::KeySource::kPaged;
  auto stream = at::cuda::getCurrentCUDAStream();
  CHECK_CUDA_LAUNCH(fm::launch_attention(p, dtype, int(d), source, int(num_parts), stream));

  combine(p, num_parts, dtype, stream);
  return {out, lse};
}

// Token-sparse attention of N query tokens, each over its own index list: q [N, h_q, d], kv
// [num_blocks, page_size, h_kv, d] bf16 (sparse prefill: [s_kv, 1, h_kv, d]) or [num_blocks, page_size, 1,
// 656] uint8 (fp8_v32), indices [N, h_kv, topk] absolute slots, lengths [N] or None -> (out [N, h_q, 512],
// max_logits [N, h_q] (empty unless asked), lse [N, h_q]). Sparse prefill and (token-major) sparse decode
// both come here. With a plan (schedule, num_splits [N + 1]) a token's keys may be split across CTAs and
// merged by the combine kernel (unsplit: the plan has one part per token, so nothing is merged); without one
// every token is one CTA's whole run, except that a sparse prefill may split the tokens at the boundaries of
// its persistent CTAs' runs (below).
std::vector<torch::Tensor> sparse_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor indices,
                                            c10::optional<torch::Tensor> lengths, double softmax_scale,
                                            c10::optional<torch::Tensor> attn_sink, bool with_max_logits,
                                            c10::optional<torch::Tensor> schedule,
                                            c10::optional<torch::Tensor> num_splits, bool unsplit) {
  check_sm90(q);
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t n = q.size(0), h_q = q.size(1), d = q.size(2), h_kv = kv.size(2), topk = indices.size(2);
  const bool fp8 = kv.scalar_type() == torch::kUInt8;
  if (fp8) check_fp8_v32_cache(kv, d);
  auto out = torch::empty({n, h_q, fm::kHeadDimV}, q.options());
  auto f32 = q.options().dtype(torch::kFloat32);
  auto max_logits = torch::empty({with_max_logits ? n : 0, h_q}, f32);
  auto lse = torch::empty({n, h_q}, f32);
  if (n == 0) return {out, max_logits, lse};
  for (auto st : {q.stride(0), q.stride(1), indices.stride(0), indices.stride(1)}) {
    TORCH_CHECK(st <= std::numeric_limits<int32_t>::max(), "flashmla_sm90: a stride exceeds int32");
  }
  const int64_t capacity = cache_capacity(kv);
  TORCH_CHECK(!with_max_logits || !schedule.has_value(),
              "flashmla_sm90: max_logits comes with the binding's own plan (no schedule)");
  TORCH_CHECK(!lengths.has_value() || (lengths->numel() == n && lengths->stride(0) == 1),
              "flashmla_sm90: topk lengths must be a contiguous [N] tensor");
  const int64_t rows = h_q / h_kv;
  std::vector<torch::Tensor> own_plan;
  bool uniform = false;  // own_plan is a uniform plan: split tokens, compact slots
  if (!schedule.has_value()) {
    // Sparse prefill (with_max_logits): one wave of persistent CTAs, each a contiguous run of tokens, so that
    // a CTA's producer gathers on into its next token's tiles (~1 % on h128 prefill, mixed on h64). Whole
    // tokens (the deterministic plan; it reads no lengths) unless they would leave the CTAs more than 15 %
    // idle by count (fewer tokens than CTAs, or a few more), else the uniform plan, which splits tokens at
    // part boundaries and merges them in the combine kernel. Its split tokens cost a float32 partial each
    // and the combine runs after the whole grid, while the lone CTAs of a whole-token tail run faster than
    // the count says: A/B on the H100, topk 2048 (docs/benchmarks/sm90-sparse.md, thirteenth session), s_q
    // 16 / 64 / 148 / 400 at h_q 64 took 42.5 / 76.8 / 129 / 267 us split vs 73.6 / 81.8 / 155 / 291 whole,
    // but s_q 200 / 1000 / 4096 1 / 2 / 1.5-2.5 % longer. Sparse decode keeps a CTA per token: there the
    // block scheduler's dynamic placement measured 3 % better on bf16-h128-mtp2. FLASHMLA_SM90_PERSIST=0: a
    // CTA per token, FLASHMLA_SM90_PREFILL_SPLIT=0: whole tokens, =1: split whenever whole tokens leave any
    // CTA idle, for A/B; read per call.
    const int64_t persist_parts = with_max_logits && !env_equals("FLASHMLA_SM90_PERSIST", "0")
                                      ? default_num_parts(q, h_kv, rows) : 0;
    const int64_t per_part = persist_parts > 0 ? (n + persist_parts - 1) / persist_parts : 0;
    const int idle_percent = env_equals("FLASHMLA_SM90_PREFILL_SPLIT", "1") ? 0 : 15;
    // (split parts' row maxima come from sparse_seesaw.cuh only, not from the two-buffer kernel's A/B form)
    uniform = per_part * persist_parts * 100 > n * (100 + idle_percent) &&
              !env_equals("FLASHMLA_SM90_PREFILL_SPLIT", "0") && !env_equals("FLASHMLA_SM90_SPARSE_SEESAW", "0");
    own_plan = uniform ? uniform_plan(q, n, (topk + fm::kTileTokens - 1) / fm::kTileTokens, persist_parts)
                       : plan(indices.select(2, 0).select(1, 0), persist_parts, /*deterministic=*/true, 0);
    schedule = own_plan[0];
    num_splits = own_plan[1];
  }
  TORCH_CHECK(num_splits.has_value() && num_splits->numel() == n + 1,
              "flashmla_sm90: a sparse plan counts splits per query token (num_splits [N + 1])");
  const int64_t num_parts = schedule->size(0);
  TORCH_CHECK(!unsplit || num_parts == n, "flashmla_sm90: an unsplit sparse plan has one part per query token");
  // split-KV workspace (as in dense_decode; a uniform plan's compact slots); none for a plan that splits no
  // token (the binding's deterministic one, or the caller's with `unsplit`: no workspace, no combine launch)
  const bool may_split = (own_plan.empty() && !unsplit) || uniform;
  TORCH_CHECK(!may_split || num_parts + 1 <= 1024,
              "flashmla_sm90: the combine kernel merges at most 1024 splits per token");
  const int64_t slots = uniform ? 2 * num_parts : may_split ? n + num_parts : 0;
  auto o_accum = torch::empty({slots, h_kv, rows, fm::kHeadDimV}, f32);
  auto lse_accum = torch::empty({slots, h_kv, rows}, f32);
  auto max_accum = torch::empty({uniform ? slots : 0, h_kv, rows}, f32);

  fm::AttentionParams p{};
  p.q = q.data_ptr();
  p.kv = kv.data_ptr();
  p.indices = indices.data_ptr<int32_t>();
  p.topk_length = lengths.has_value() ? lengths->data_ptr<int32_t>() : nullptr;
  p.attn_sink = attn_sink.has_value() ? attn_sink->data_ptr<float>() : nullptr;
  p.schedule = reinterpret_cast<const fm::SchedulePart*>(schedule->data_ptr<int32_t>());
  p.num_splits = num_splits->data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.max_logits = with_max_logits ? max_logits.data_ptr<float>() : nullptr;
  p.o_accum = may_split ? o_accum.data_ptr<float>() : nullptr;
  p.lse_accum = may_split ? lse_accum.data_ptr<float>() : nullptr;
  p.max_accum = uniform ? max_accum.data_ptr<float>() : nullptr;
  p.q_stride_b = q.stride(0); p.q_stride_s = 0; p.q_stride_h = q.stride(1);
  p.kv_stride_block = kv.stride(0); p.kv_stride_page = kv.stride(1); p.kv_stride_h = kv.stride(2);
  p.kv_slot_stride = kv_slot_stride(kv);
  p.idx_stride_b = indices.stride(0); p.idx_stride_h = indices.stride(1);
  p.out_stride_b = out.stride(0); p.out_stride_s = 0; p.out_stride_h = out.stride(1);
  p.lse_stride_b = h_q; p.lse_stride_h = 1; p.lse_stride_s = 0;
  p.batch = int(n); p.s_q = 1; p.h_q = int(h_q); p.h_kv = int(h_kv); p.page_size = int(kv.size(1));
  p.rows = int(rows);
  p.topk = int(topk);
  p.capacity = capacity;
  p.scale_log2 = float(softmax_scale * 1.4426950408889634);
  p.causal = false;
  const auto source = fp8 ? fm::KeySource::kIndexedFp8 : fm::KeySource::kIndexed;
  // Gathered rows go to producer/consumer kernels (bf16: attention/sparse_seesaw.cuh, fp8_v32:
  // attention/fp8_decode.cuh); FLASHMLA_SM90_SPARSE_SEESAW=0 keeps both on the two-buffer kernel
  // (read per call: a test compares the fp8 and bf16 forms of that kernel bit for bit)
  p.sparse_seesaw = !env_equals("FLASHMLA_SM90_SPARSE_SEESAW", "0");
  p.fp8_shared_dequant = !env_equals("FLASHMLA_SM90_FP8_SHARED_DEQUANT", "0");
  // with_max_logits: the prefill form (FLASHMLA_SM90_L2_KEEP_KV=0 turns the cache policy off, for A/B; read per call)
  p.l2_keep_kv = with_max_logits && !env_equals("FLASHMLA_SM90_L2_KEEP_KV", "0");
  p.q_by_producer = !env_equals("FLASHMLA_SM90_Q_BY_PRODUCER", "0");  // A/B switch, read per call
  auto stream = at::cuda::getCurrentCUDAStream();
  CHECK_CUDA_LAUNCH(fm::launch_attention(p, dtype_of(q), int(d), source, int(num_parts), stream));
  if (may_split) combine(p, num_parts, dtype_of(q), stream, uniform);
  return {out, max_logits, lse};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flashmla sm90 (Hopper) kernels";
  m.def("plan", &plan, "split-KV schedule on the device", py::arg("seqlens"), py::arg("num_parts"),
        py::arg("deterministic"), py::arg("splits_per_request") = 0);
  m.def("default_num_parts", &default_num_parts, "CTA columns for a decode grid");
  m.def("dense_decode", &dense_decode, "paged MLA decode (+ combine)");
  m.def("sparse_attention", &sparse_attention, "token-sparse MLA attention (sparse prefill, sparse decode)");
}
