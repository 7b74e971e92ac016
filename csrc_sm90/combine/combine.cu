// Merges the split-KV partials of each (request, query row): log-sum-exp of the partial lse (log2),
// weighted sum of the normalized partial outputs, attn_sink, 16-bit output and natural-log lse.
// A request with a single split was finished by the decode kernel and is skipped.
// Launched as a programmatic dependent of the attention kernel: its CTAs are dispatched while that
// kernel's last CTAs run (no launch gap between the two) and wait for its completion before reading
// the partials; the split counts come from the plan, which finished before the attention kernel began.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../common/api.h"
#include "../common/device_utils.cuh"

namespace flashmla_sm90 {

constexpr int kCombineThreads = kHeadDimV / 4;  // one float4 of the 512 output dims per thread
constexpr int kMaxSplitsInSmem = 1024;
constexpr int kSplitUnroll = 8;                  // partial rows in flight per thread (latency-bound loop)

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_float(float v) { return __float2half(v); }

// One CTA per (query row, request): weights of every split in shared memory, then each thread
// accumulates its float4 of the output over the splits, several splits in flight at a time.
template <typename T>
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const CombineParams p) {
  __shared__ float weight[kMaxSplitsInSmem];
  __shared__ float reduce[kCombineThreads / 32];
  const int row_id = blockIdx.x, req = blockIdx.y;  // row_id over h_kv * rows
  const int first = p.num_splits[req], n = min(p.num_splits[req + 1] - first, kMaxSplitsInSmem);
  if (n <= 1) return;
  wait_for_prerequisite_grids();  // the partials of the attention kernel
  const int kvh = row_id / p.rows, grow = row_id % p.rows;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t stride = int64_t(p.h_kv) * p.rows;
  const int64_t base = int64_t(first) * stride + int64_t(kvh) * p.rows + grow;

  float m = -INFINITY;
  for (int s = tid; s < n; s += kCombineThreads) {
    weight[s] = p.lse_accum[base + s * stride];
    m = fmaxf(m, weight[s]);
  }
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
  if (lane == 0) reduce[warp] = m;
  __syncthreads();
  m = reduce[0];
  for (int w = 1; w < kCombineThreads / 32; ++w) m = fmaxf(m, reduce[w]);
  __syncthreads();
  float sum = 0.f;
  for (int s = tid; s < n; s += kCombineThreads) {
    const float w = m == -INFINITY ? 0.f : exp2f(weight[s] - m);
    weight[s] = w;
    sum += w;
  }
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffff, sum, o);
  if (lane == 0) reduce[warp] = sum;
  __syncthreads();
  sum = 0.f;
  for (int w = 0; w < kCombineThreads / 32; ++w) sum += reduce[w];
  const bool empty = !(sum > 0.f);
  const float inv_sum = empty ? 0.f : 1.f / sum;
  const float lse2 = empty ? -INFINITY : m + log2f(sum);

  const float4* src = reinterpret_cast<const float4*>(p.o_accum + base * kHeadDimV) + tid;
  const int64_t step = stride * (kHeadDimV / 4);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  int s = 0;
  for (; s + kSplitUnroll <= n; s += kSplitUnroll) {
    float4 v[kSplitUnroll];
#pragma unroll
    for (int u = 0; u < kSplitUnroll; ++u) v[u] = src[(s + u) * step];
#pragma unroll
    for (int u = 0; u < kSplitUnroll; ++u) {
      const float w = weight[s + u];
      acc.x += w * v[u].x; acc.y += w * v[u].y; acc.z += w * v[u].z; acc.w += w * v[u].w;
    }
  }
  for (; s < n; ++s) {
    const float4 v = src[s * step];
    const float w = weight[s];
    acc.x += w * v.x; acc.y += w * v.y; acc.z += w * v.z; acc.w += w * v.w;
  }
  const int heads_per_kv = p.h_q / p.h_kv;
  const int j = grow / heads_per_kv, h = kvh * heads_per_kv + grow % heads_per_kv;
  float factor = inv_sum;
  if (!empty && p.attn_sink != nullptr) factor *= 1.f / (1.f + __expf(p.attn_sink[h] - lse2 * kLn2));
  T* out = static_cast<T*>(p.out) + req * p.out_stride_b + j * p.out_stride_s + h * p.out_stride_h + tid * 4;
  // one 8-byte store (out is the binding's contiguous tensor: rows of 512 16-bit values); element by
  // element the compiler issued four 2-byte stores
  const T packed[4] = {from_float<T>(acc.x * factor), from_float<T>(acc.y * factor), from_float<T>(acc.z * factor),
                       from_float<T>(acc.w * factor)};
  *reinterpret_cast<uint2*>(out) = *reinterpret_cast<const uint2*>(packed);
  if (tid == 0) p.lse[(int64_t(req) * p.h_q + h) * p.s_q + j] = empty ? INFINITY : lse2 * kLn2;
}

cudaError_t launch_combine(const CombineParams& p, DType dtype, cudaStream_t stream) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(p.h_kv * p.rows, p.batch);
  config.blockDim = dim3(kCombineThreads);
  config.stream = stream;
  cudaLaunchAttribute pdl{};
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &pdl;
  config.numAttrs = p.programmatic ? 1 : 0;
  const cudaError_t err = dtype == DType::kBF16 ? cudaLaunchKernelEx(&config, combine_kernel<__nv_bfloat16>, p)
                                                : cudaLaunchKernelEx(&config, combine_kernel<__half>, p);
  return err != cudaSuccess ? err : cudaGetLastError();
}

}  // namespace flashmla_sm90
