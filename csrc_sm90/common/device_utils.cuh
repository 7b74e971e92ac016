// Small device helpers: cp.async groups, CTA/cluster barriers, quad reductions.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace flashmla_sm90 {

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Barrier among `threads` threads (a multiple of 32) on hardware barrier `id` (0 is __syncthreads).
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads));
}

// A CTA barrier, or with `cluster` a barrier of the whole cluster that also publishes this thread's
// shared-memory writes into peer CTAs, to the generic and to the async (wgmma) proxy.
__device__ __forceinline__ void cta_or_cluster_sync(bool cluster) {
  if (cluster) {
    asm volatile("fence.proxy.async.shared::cluster;\n" ::: "memory");
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  } else {
    __syncthreads();
  }
}

// wgmma accumulator rows are spread over the 4 lanes of a quad.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffff, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffff, v, 1);
  return v + __shfl_xor_sync(0xffffffff, v, 2);
}

constexpr float kLn2 = 0.69314718055994530942f;

}  // namespace flashmla_sm90
