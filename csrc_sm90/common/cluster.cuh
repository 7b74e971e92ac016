// Thread-block-cluster helpers (sm_90): addressing the peer CTA's shared memory, asynchronous stores into
// it counted on its mbarrier, remote arrivals, and the cluster-wide barrier.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace flashmla_sm90 {

// The peer CTA's copy of a shared::cta address, as a shared::cluster address.
__device__ __forceinline__ uint32_t peer_address(uint32_t local, uint32_t peer_rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(peer_rank));
  return remote;
}

// 16 bytes into (peer) shared memory, counted as transaction bytes on the mbarrier `bar` of the CTA that
// owns `at` (async proxy: the reader waits on that barrier, then reads with wgmma).
__device__ __forceinline__ void store_async_u128(uint32_t at, const uint4& v, uint32_t bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n" ::"r"(at),
               "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(bar)
               : "memory");
}

// This CTA's mbarrier will also wait for `bytes` transaction bytes in its current phase.
__device__ __forceinline__ void expect_tx(const uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(bytes)
               : "memory");
}

// A release arrival on an mbarrier of (another CTA of) the cluster.
__device__ __forceinline__ void arrive_cluster(uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// Every thread of every CTA of the cluster (each warp from one instruction).
__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

}  // namespace flashmla_sm90
