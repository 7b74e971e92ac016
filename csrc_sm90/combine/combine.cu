// Merges the split-KV partials of each (request, query row): log-sum-exp of the partial lse (log2),
// weighted sum of the normalized partial outputs, attn_sink, 16-bit output and natural-log lse.
// A request with a single split was finished by the decode kernel and is skipped. A CTA row per request, or
// (CombineParams::by_part, the sparse prefill's uniform plan) per schedule part: the split request whose first
// part it is, if any — a prefill's s_q may pass the grid's y limit, its split tokens number fewer than its parts.
// Split sparse prefill tokens also get max_logits, the largest of their parts' row maxima.
// Launched as a programmatic dependent of the attention kernel: its CTAs are dispatched while that
// kernel's last CTAs run (no launch gap between the two) and wait for its completion before reading
// the partials; the split counts come from the plan, which finished before the attention kernel began.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../common/api.h"
#include "../common/device_utils.cuh"

namespace flashmla_sm90 {

constexpr int kCombineThreads = 128;
constexpr int kMaxSplitsInSmem = 1024;
constexpr int kCombineCtasPerSm = 8;   // <= 64 registers: a b = 64, h_q = 64 sparse decode's rows in one wave

// Two ways to map a row's 512 output dims on threads (CombineParams::few_splits picks):
//  * few splits (the plan averages <= 2 per request; every CTA of the attention kernel ends at once and
//    the combine runs after them): one warp per row, 4 rows per CTA, 4 float4s per lane, 2 splits in flight;
//  * many splits (b1-h16-2k: 32; few rows, so each row's dependent loads are the latency): one CTA per
//    row, 1 float4 per thread, 8 splits in flight.
// Either way 8 float4s of partials are in flight per thread, and the first of them are loaded before the
// split weights are known, so both latencies overlap.
template <bool kFewSplits>
struct RowMap {
  static constexpr int kThreadsPerRow = kFewSplits ? 32 : kCombineThreads;
  static constexpr int kRowsPerCta = kCombineThreads / kThreadsPerRow;
  static constexpr int kVecPerThread = kHeadDimV / 4 / kThreadsPerRow;  // float4s of the row per thread
  static constexpr int kSplitUnroll = 8 / kVecPerThread;
};

// Two floats -> two 16-bit values in one 32-bit word (low half first), rounded to nearest even.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// max / sum over the threads of one row: a warp (shuffles), or the whole CTA (shuffles, then the four
// warps' values through shared memory)
template <int kThreadsPerRow, bool kMax>
__device__ __forceinline__ float row_reduce(float v, float* scratch) {
  for (int o = 16; o > 0; o /= 2) {
    const float other = __shfl_xor_sync(0xffffffff, v, o);
    v = kMax ? fmaxf(v, other) : v + other;
  }
  if constexpr (kThreadsPerRow > 32) {
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    v = scratch[0];
    for (int w = 1; w < kThreadsPerRow / 32; ++w) v = kMax ? fmaxf(v, scratch[w]) : v + scratch[w];
    __syncthreads();
  }
  return v;
}

template <typename T, bool kFewSplits>
__global__ void __launch_bounds__(kCombineThreads, kCombineCtasPerSm) combine_kernel(const CombineParams p) {
  using Map = RowMap<kFewSplits>;
  constexpr int kVec = Map::kVecPerThread, kUnroll = Map::kSplitUnroll, kTpr = Map::kThreadsPerRow;
  __shared__ float weight_smem[Map::kRowsPerCta][kMaxSplitsInSmem];
  __shared__ float scratch[kCombineThreads / 32];
  const int group = threadIdx.x / kTpr, t = threadIdx.x % kTpr;
  const int row_id = blockIdx.x * Map::kRowsPerCta + group;  // over h_kv * rows
  if (row_id >= p.h_kv * p.rows) return;   // a whole row group; with one row per CTA, the whole CTA
  // by_part: the plan was made before the attention kernel began (stream order), so it may be read at once
  const int req = p.by_part != nullptr ? p.by_part[blockIdx.y].combine_req : int(blockIdx.y);
  if (req < 0) return;
  const int first = p.num_splits[req], n = min(p.num_splits[req + 1] - first, kMaxSplitsInSmem);
  if (n <= 1) return;
  wait_for_prerequisite_grids();  // the partials of the attention kernel
  const int kvh = row_id / p.rows, grow = row_id % p.rows;
  const int64_t stride = int64_t(p.h_kv) * p.rows;
  const int64_t base = int64_t(first) * stride + int64_t(kvh) * p.rows + grow;
  const float4* src = reinterpret_cast<const float4*>(p.o_accum + base * kHeadDimV) + t;  // float4 k: src[kTpr k]
  const int64_t step = stride * (kHeadDimV / 4);

  float4 v[kUnroll][kVec];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[u][k] = u < n ? src[u * step + kTpr * k] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float* weight = weight_smem[group];
  float m = -INFINITY;
  for (int s = t; s < n; s += kTpr) {
    weight[s] = p.lse_accum[base + s * stride];
    m = fmaxf(m, weight[s]);
  }
  m = row_reduce<kTpr, true>(m, scratch);
  // max_logits (sparse attention: s_q 1, so row grow of KV head kvh is head kvh * rows + grow), written at
  // once: a value held through the loops below spilled at the 64-register budget
  if (p.max_accum != nullptr) {
    float max_logit = -INFINITY;
    for (int s = t; s < n; s += kTpr) max_logit = fmaxf(max_logit, p.max_accum[base + s * stride]);
    max_logit = row_reduce<kTpr, true>(max_logit, scratch);
    if (t == 0) p.max_logits[int64_t(req) * p.h_q + kvh * p.rows + grow] = max_logit * kLn2;
  }
  float sum = 0.f;
  for (int s = t; s < n; s += kTpr) {
    const float w = m == -INFINITY ? 0.f : exp2f(weight[s] - m);
    weight[s] = w;
    sum += w;
  }
  sum = row_reduce<kTpr, false>(sum, scratch);   // its barrier (or, per warp, the shuffles) publishes weight[]
  if constexpr (kTpr == 32) __syncwarp();
  const bool empty = !(sum > 0.f);
  const float inv_sum = empty ? 0.f : 1.f / sum;
  const float lse2 = empty ? -INFINITY : m + log2f(sum);

  // accumulate in split order; the loads of the next kUnroll splits are issued once the current ones are used
  float4 acc[kVec];
#pragma unroll
  for (int k = 0; k < kVec; ++k) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s = 0; s < n; s += kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (s + u < n) {
        const float w = weight[s + u];
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          acc[k].x += w * v[u][k].x; acc[k].y += w * v[u][k].y; acc[k].z += w * v[u][k].z; acc[k].w += w * v[u][k].w;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (s + kUnroll + u < n) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) v[u][k] = src[(s + kUnroll + u) * step + kTpr * k];
      }
    }
  }
  const int heads_per_kv = p.h_q / p.h_kv;
  const int j = grow / heads_per_kv, h = kvh * heads_per_kv + grow % heads_per_kv;
  float factor = inv_sum;
  if (!empty && p.attn_sink != nullptr) factor *= 1.f / (1.f + __expf(p.attn_sink[h] - lse2 * kLn2));
  T* out = static_cast<T*>(p.out) + req * p.out_stride_b + j * p.out_stride_s + h * p.out_stride_h;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    // one 8-byte store (out is the binding's contiguous tensor: rows of 512 16-bit values); element by
    // element the compiler issued four 2-byte stores
    *reinterpret_cast<uint2*>(out + (t + kTpr * k) * 4) =
        make_uint2(pack2<T>(acc[k].x * factor, acc[k].y * factor), pack2<T>(acc[k].z * factor, acc[k].w * factor));
  }
  if (t == 0) p.lse[(int64_t(req) * p.h_q + h) * p.s_q + j] = empty ? INFINITY : lse2 * kLn2;
}

cudaError_t launch_combine(const CombineParams& p, DType dtype, cudaStream_t stream) {
  cudaLaunchConfig_t config{};
  const int rows_per_cta = p.few_splits ? RowMap<true>::kRowsPerCta : RowMap<false>::kRowsPerCta;
  config.gridDim = dim3((p.h_kv * p.rows + rows_per_cta - 1) / rows_per_cta, p.by_part ? p.num_parts : p.batch);
  config.blockDim = dim3(kCombineThreads);
  config.stream = stream;
  cudaLaunchAttribute pdl{};
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &pdl;
  config.numAttrs = p.programmatic ? 1 : 0;
  const bool bf16 = dtype == DType::kBF16;
  cudaError_t err;
  if (p.few_splits) {
    err = bf16 ? cudaLaunchKernelEx(&config, combine_kernel<__nv_bfloat16, true>, p)
               : cudaLaunchKernelEx(&config, combine_kernel<__half, true>, p);
  } else {
    err = bf16 ? cudaLaunchKernelEx(&config, combine_kernel<__nv_bfloat16, false>, p)
               : cudaLaunchKernelEx(&config, combine_kernel<__half, false>, p);
  }
  return err != cudaSuccess ? err : cudaGetLastError();
}

}  // namespace flashmla_sm90
