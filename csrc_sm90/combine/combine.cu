// Merges the split-KV partials of each (request, query row): log-sum-exp of the partial lse (log2),
// weighted sum of the normalized partial outputs, attn_sink, 16-bit output and natural-log lse.
// One warp per row; a request with a single split was finished by the decode kernel and is skipped.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../common/api.h"
#include "../common/device_utils.cuh"

namespace flashmla_sm90 {

constexpr int kCombineWarps = 4;

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_float(float v) { return __float2half(v); }

template <typename T>
__global__ void __launch_bounds__(kCombineWarps * 32) combine_kernel(const CombineParams p) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_id = blockIdx.x * kCombineWarps + warp;  // over h_kv * rows
  const int req = blockIdx.y;
  if (row_id >= p.h_kv * p.rows) return;
  const int first = p.num_splits[req], n = p.num_splits[req + 1] - first;
  if (n <= 1) return;
  const int kvh = row_id / p.rows, grow = row_id % p.rows;
  auto lse_of = [&](int s) { return p.lse_accum[(int64_t(first + s) * p.h_kv + kvh) * p.rows + grow]; };

  float m = -INFINITY;
  for (int s = lane; s < n; s += 32) m = fmaxf(m, lse_of(s));
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
  float sum = 0.f;
  if (m != -INFINITY) {
    for (int s = lane; s < n; s += 32) sum += exp2f(lse_of(s) - m);
  }
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffff, sum, o);
  const bool empty = !(sum > 0.f);
  const float lse2 = empty ? -INFINITY : m + log2f(sum);

  float4 acc[kHeadDimV / 128];
  for (auto& a : acc) a = make_float4(0.f, 0.f, 0.f, 0.f);
  if (!empty) {
    for (int s = 0; s < n; ++s) {
      const float w = exp2f(lse_of(s) - lse2);
      const float4* src = reinterpret_cast<const float4*>(
          p.o_accum + ((int64_t(first + s) * p.h_kv + kvh) * p.rows + grow) * kHeadDimV);
#pragma unroll
      for (int k = 0; k < kHeadDimV / 128; ++k) {
        const float4 v = src[k * 32 + lane];
        acc[k].x += w * v.x; acc[k].y += w * v.y; acc[k].z += w * v.z; acc[k].w += w * v.w;
      }
    }
  }
  const int heads_per_kv = p.h_q / p.h_kv;
  const int j = grow / heads_per_kv, h = kvh * heads_per_kv + grow % heads_per_kv;
  float factor = empty ? 0.f : 1.f;
  if (!empty && p.attn_sink != nullptr) factor = 1.f / (1.f + __expf(p.attn_sink[h] - lse2 * kLn2));
  T* out = static_cast<T*>(p.out) + req * p.out_stride_b + j * p.out_stride_s + h * p.out_stride_h;
#pragma unroll
  for (int k = 0; k < kHeadDimV / 128; ++k) {
    const int d = (k * 32 + lane) * 4;
    out[d + 0] = from_float<T>(acc[k].x * factor);
    out[d + 1] = from_float<T>(acc[k].y * factor);
    out[d + 2] = from_float<T>(acc[k].z * factor);
    out[d + 3] = from_float<T>(acc[k].w * factor);
  }
  if (lane == 0) p.lse[(int64_t(req) * p.h_q + h) * p.s_q + j] = empty ? INFINITY : lse2 * kLn2;
}

cudaError_t launch_combine(const CombineParams& p, DType dtype, cudaStream_t stream) {
  const dim3 grid((p.h_kv * p.rows + kCombineWarps - 1) / kCombineWarps, p.batch);
  if (dtype == DType::kBF16) {
    combine_kernel<__nv_bfloat16><<<grid, kCombineWarps * 32, 0, stream>>>(p);
  } else {
    combine_kernel<__half><<<grid, kCombineWarps * 32, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace flashmla_sm90
