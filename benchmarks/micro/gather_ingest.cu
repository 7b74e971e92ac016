// How fast can one CTA per SM gather 64 arbitrary 1152-byte rows per tile (the sparse kernels' gather)
// into the swizzle-128B K-major tile wgmma reads, from a working set the size of the sparse prefill's
// kv (s_kv 32768 x 576 bf16 = 37.7 MB) and from one half / twice that? No compute: the ceiling the sparse
// prefill's tile loop can reach on its gathers alone.
//
// Forms (one CTA per SM, tiles of 64 random rows, `depth` tiles in flight):
//   cp.async   T threads issue 16-byte cp.async (the kernels' producer: 128 threads), wait_group ring
//   tma-rows   one warp issues nine 1-row x 64-column swizzle-128B TMA boxes per row (each lands at its
//              row of the slab; the hardware applies the swizzle from the shared address), an mbarrier
//              per buffer; invalid rows would come back zero-filled (out-of-bounds coordinates)
//   multicast  2-CTA clusters (the two 64-row m-tiles of an h_q 128 token): each CTA issues half the rows
//              with .multicast::cluster, so every row crosses the L2 once and lands in both CTAs; a buffer
//              is refilled once both CTAs have released it (remote mbarrier arrivals)
// `share 2`: pairs of CTAs gather the same rows without a cluster (today's h_q 128 prefill: the second CTA
// of a token re-reads the rows from the L2). Rates count bytes landed in shared memory (both CTAs of a
// pair); "rows" counts distinct gathered bytes.
// A check after the timing compares a TMA-landed tile with a cp.async-landed one byte for byte.
//
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o /tmp/gather benchmarks/micro/gather_ingest.cu && /tmp/gather
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../csrc_sm90/common/tensor_map.h"
#include "launch_timer.h"

constexpr int kRowBytes = 1152, kRows = 64, kTileBytes = kRows * kRowBytes, kChunks = kRowBytes / 16;
constexpr int kTilesPerCta = 96;

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// 16-byte chunk `chunk` of row `row` in the swizzle-128B K-major tile (as csrc_sm90/attention/tile_copy.cuh)
__device__ __forceinline__ int swizzled(int row, int chunk) {
  return (chunk >> 3) * (64 * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

__device__ __forceinline__ void wait_parity(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n wait:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra wait;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// indices[list][tile][64]; CTA b gathers list b / share. kPerRow threads share a row: thread t copies chunks
// t % kPerRow + kPerRow j of rows t / kPerRow + (kThreads / kPerRow) i. kPerRow 8: each warp instruction
// covers four whole 128-byte lines (the sparse kernels' producer); 4: eight half lines; 2: sixteen quarters.
template <int kThreads, int kPerRow, int kDepth>
__global__ void __launch_bounds__(kThreads, 1) gather_cp_async(const char* kv, const int* indices, int share,
                                                               unsigned long long* sink) {
  extern __shared__ __align__(1024) char smem[];
  constexpr int kRowsPerPass = kThreads / kPerRow, kMyRows = kRows / kRowsPerPass, kMyChunks = kChunks / kPerRow;
  const int tid = threadIdx.x, row0 = tid / kPerRow, c0 = tid % kPerRow;
  const int* my = indices + size_t(blockIdx.x / share) * kTilesPerCta * kRows;
  const uint32_t base = (smem_addr(smem) + 1023) & ~1023u;
  int next[kMyRows];
#pragma unroll
  for (int i = 0; i < kMyRows; ++i) next[i] = my[row0 + kRowsPerPass * i];
  auto issue = [&](int t) {
    const uint32_t dst = base + (t % kDepth) * kTileBytes;
#pragma unroll
    for (int i = 0; i < kMyRows; ++i) {
      const int row = row0 + kRowsPerPass * i;
      const char* src = kv + int64_t(next[i]) * kRowBytes;
      if (t + 1 < kTilesPerCta) next[i] = my[(t + 1) * kRows + row];
#pragma unroll
      for (int j = 0; j < kMyChunks; ++j) {
        const int chunk = c0 + kPerRow * j;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + swizzled(row, chunk)),
                     "l"(src + chunk * 16));
      }
    }
    asm volatile("cp.async.commit_group;\n");
  };
  for (int t = 0; t < kDepth - 1; ++t) issue(t);
  unsigned long long acc = 0;
  for (int t = 0; t < kTilesPerCta; ++t) {
    if (t + kDepth - 1 < kTilesPerCta) issue(t + kDepth - 1);
    else asm volatile("cp.async.commit_group;\n");
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kDepth - 1));
    __syncthreads();
    acc += smem[(base - smem_addr(smem)) + (t % kDepth) * kTileBytes + tid * 4];
    __syncthreads();
  }
  if (acc == 12345) *sink = acc;
}

// TMA rows; kCluster 2: multicast halves. Warp 0 issues; all threads consume.
template <int kDepth, int kCluster>
__global__ void __launch_bounds__(256, 1) gather_tma_rows(const __grid_constant__ CUtensorMap map, const int* indices,
                                                          int share, unsigned long long* sink) {
  extern __shared__ __align__(1024) char smem[];
  __shared__ __align__(8) uint64_t full[kDepth], empty[kDepth];
  const int tid = threadIdx.x, lane = tid % 32;
  uint32_t rank = 0;
  if constexpr (kCluster > 1) asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  const int list = kCluster > 1 ? blockIdx.x / kCluster : blockIdx.x / share;
  const int* my = indices + size_t(list) * kTilesPerCta * kRows;
  const uint32_t base = (smem_addr(smem) + 1023) & ~1023u;
  if (tid == 0) {
    for (int i = 0; i < kDepth; ++i) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_addr(&full[i])));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(&empty[i])), "r"(kCluster));
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n");
  }
  if constexpr (kCluster > 1) {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
  } else {
    __syncthreads();
  }
  // this CTA issues rows [r_lo, r_lo + kRows / kCluster) of each tile; lane l rows r_lo + l (+ 32)
  constexpr int kMine = kRows / kCluster, kPerLane = kMine / 32;
  const int r_lo = rank * kMine;
  int next[kPerLane];
  if (tid < 32) {
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) next[j] = my[r_lo + lane + 32 * j];
  }
  auto issue = [&](int t) {
    if (tid >= 32) return;
    const int buf = t % kDepth;
    if (t >= kDepth) wait_parity(smem_addr(&empty[buf]), ((t / kDepth) - 1) & 1);
    const uint32_t bar = smem_addr(&full[buf]);
    if (lane == 0) asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(kTileBytes));
    __syncwarp();
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int row = r_lo + lane + 32 * j, idx = next[j];
      if (t + 1 < kTilesPerCta) next[j] = my[(t + 1) * kRows + row];
#pragma unroll
      for (int s = 0; s < kRowBytes / 128; ++s) {
        const uint32_t dst = base + buf * kTileBytes + s * 8192 + row * 128;
        if constexpr (kCluster > 1) {
          asm volatile(
              "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
              " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
              "l"(&map), "r"(s * 64), "r"(idx), "r"(bar), "h"(uint16_t(3))
              : "memory");
        } else {
          asm volatile(
              "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
                  dst),
              "l"(&map), "r"(s * 64), "r"(idx), "r"(bar)
              : "memory");
        }
      }
    }
  };
  for (int t = 0; t < kDepth - 1; ++t) issue(t);
  unsigned long long acc = 0;
  for (int t = 0; t < kTilesPerCta; ++t) {
    if (t + kDepth - 1 < kTilesPerCta) issue(t + kDepth - 1);
    const int buf = t % kDepth;
    wait_parity(smem_addr(&full[buf]), (t / kDepth) & 1);
    acc += smem[(base - smem_addr(smem)) + buf * kTileBytes + tid * 4];
    __syncthreads();  // every thread is done with the buffer
    if (tid == 0) {
      for (uint32_t peer = 0; peer < uint32_t(kCluster); ++peer) {  // release it in every CTA that fills it
        uint32_t remote = smem_addr(&empty[buf]);
        if constexpr (kCluster > 1) {
          asm volatile("mapa.shared::cluster.u32 %0, %0, %1;\n" : "+r"(remote) : "r"(peer));
          asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
        } else {
          asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(remote) : "memory");
        }
      }
    }
  }
  if constexpr (kCluster > 1) {  // no CTA leaves while its peer may still write into it
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
  }
  if (acc == 12345) *sink = acc;
}

// Copies tile 0 of CTA 0 as landed (for the layout check): both forms gather list 0's first tile.
template <int kForm>  // 0 cp.async, 1 TMA rows
__global__ void __launch_bounds__(256, 1) land_one_tile(const char* kv, const __grid_constant__ CUtensorMap map,
                                                        const int* indices, char* out) {
  extern __shared__ __align__(1024) char smem[];
  __shared__ __align__(8) uint64_t full;
  const int tid = threadIdx.x;
  const uint32_t base = (smem_addr(smem) + 1023) & ~1023u;
  char* tile = smem + (base - smem_addr(smem));
  for (int i = tid; i < kTileBytes; i += 256) tile[i] = 0x55;
  __syncthreads();
  if constexpr (kForm == 0) {
    const int row = tid / 4, c0 = tid % 4;
    const char* src = kv + int64_t(indices[row]) * kRowBytes;
    for (int i = 0; i < kChunks / 4; ++i) {
      const int chunk = c0 + 4 * i;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(base + swizzled(row, chunk)), "l"(src + chunk * 16));
    }
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n");
  } else {
    if (tid == 0) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\nfence.mbarrier_init.release.cluster;\n" ::"r"(smem_addr(&full)));
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(&full)), "r"(kTileBytes));
      for (int row = 0; row < kRows; ++row) {
        for (int s = 0; s < kRowBytes / 128; ++s) {
          asm volatile(
              "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
                  base + s * 8192 + row * 128),
              "l"(&map), "r"(s * 64), "r"(indices[row]), "r"(smem_addr(&full))
              : "memory");
        }
      }
    }
    __syncthreads();
    wait_parity(smem_addr(&full), 0);
  }
  __syncthreads();
  for (int i = tid; i < kTileBytes; i += 256) out[i] = tile[i];
}

// kv as a 2-D tensor (576 bf16 columns, rows), 64 x 1 boxes, swizzle 128B
CUtensorMap make_row_map(const char* kv, int n_rows) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {kRowBytes / 2, cuuint64_t(n_rows)};
  const cuuint64_t strides[1] = {kRowBytes};
  const cuuint32_t box[2] = {64, 1}, elem[2] = {1, 1};
  const CUresult r = flashmla_sm90::tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<char*>(kv), dims, strides, box, elem,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) printf("cuTensorMapEncodeTiled failed: %d\n", int(r));
  return map;
}

// Times `launch` (2 warm-up launches, then the mean of 5) and prints one line.
template <typename Launch>
void report(Launch launch, int ctas, int share, double ws_mb, const char* how, int depth) {
  const float ms = mean_launch_ms(launch);
  const double landed = double(ctas) * kTilesPerCta * kTileBytes;
  printf("ws %5.1f MB  %-22s depth %d  %7.1f us  landed %6.0f GB/s  rows %6.0f GB/s  %5.2f us/tile/SM  (%s)\n", ws_mb,
         how, depth, ms * 1e3, landed / ms / 1e6, landed / share / ms / 1e6, ms * 1e3 / kTilesPerCta,
         cudaGetErrorString(cudaGetLastError()));
}

template <int kThreads, int kPerRow, int kDepth>
void run_cp_async(const char* kv, const int* idx, int ctas, int share, double ws_mb, unsigned long long* sink) {
  const size_t smem = size_t(kDepth) * kTileBytes + 1024;
  cudaFuncSetAttribute(gather_cp_async<kThreads, kPerRow, kDepth>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       int(smem));
  char how[64];
  snprintf(how, sizeof how, "cp.async %dx%d share %d", kThreads, kPerRow, share);
  report([&] { gather_cp_async<kThreads, kPerRow, kDepth><<<ctas, kThreads, smem>>>(kv, idx, share, sink); }, ctas,
         share, ws_mb,
         how, kDepth);
}

template <int kDepth, int kCluster>
void run_tma(const CUtensorMap& map, const int* idx, int ctas, int share, double ws_mb, unsigned long long* sink) {
  auto kernel = gather_tma_rows<kDepth, kCluster>;
  const size_t smem = size_t(kDepth) * kTileBytes + 1024;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(ctas);
  cfg.blockDim = dim3(256);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = kCluster;
  attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if (kCluster > 1) {
    int clusters = -1;
    cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg);
    printf("  max active %d-CTA clusters at %zu B of shared memory: %d (%d SMs)\n", kCluster, smem, clusters,
           clusters * kCluster);
  }
  char how[64];
  if (kCluster > 1) snprintf(how, sizeof how, "tma-rows multicast");
  else snprintf(how, sizeof how, "tma-rows share %d", share);
  report([&] { cudaLaunchKernelEx(&cfg, kernel, map, idx, kCluster > 1 ? kCluster : share, sink); }, ctas,
         kCluster > 1 ? kCluster : share, ws_mb, how, kDepth);
}

int main(int argc, char** argv) {
  // "producer": only the sparse kernels' producer form (128 threads x 8 per row), for ncu's DRAM counters
  const bool producer_only = argc > 1 && strcmp(argv[1], "producer") == 0;
  int sms;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const int ctas = sms & ~1;  // an even count, for the pairs
  printf("%d CTAs, %d tiles of 64 random rows x 1152 B each\n", ctas, kTilesPerCta);
  const int max_rows = 65536;
  char* kv;
  cudaMalloc(&kv, size_t(max_rows) * kRowBytes);
  {
    std::vector<uint16_t> h(size_t(max_rows) * kRowBytes / 2);
    for (size_t i = 0; i < h.size(); ++i) h[i] = uint16_t(i * 2654435761u >> 7);
    cudaMemcpy(kv, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
  }
  unsigned long long* sink;
  cudaMalloc(&sink, 8);
  const size_t n_idx = size_t(ctas) * kTilesPerCta * kRows;
  int* idx;
  cudaMalloc(&idx, n_idx * sizeof(int));
  std::vector<int> h_idx(n_idx);
  for (int n_rows : {16384, 32768, 65536}) {
    uint32_t x = 12345u + n_rows;
    for (auto& v : h_idx) {
      x = x * 1664525u + 1013904223u;
      v = int((x >> 8) % uint32_t(n_rows));
    }
    cudaMemcpy(idx, h_idx.data(), n_idx * sizeof(int), cudaMemcpyHostToDevice);
    const double ws_mb = double(n_rows) * kRowBytes / 1e6;
    const CUtensorMap map = make_row_map(kv, n_rows);
    if (producer_only) {
      if (n_rows == 16384) continue;
      run_cp_async<128, 8, 2>(kv, idx, ctas, 1, ws_mb, sink);
      run_cp_async<128, 8, 2>(kv, idx, ctas, 2, ws_mb, sink);
      continue;
    }
    run_cp_async<256, 4, 2>(kv, idx, ctas, 1, ws_mb, sink);
    run_cp_async<256, 8, 2>(kv, idx, ctas, 1, ws_mb, sink);
    run_cp_async<128, 2, 2>(kv, idx, ctas, 1, ws_mb, sink);
    run_cp_async<128, 4, 2>(kv, idx, ctas, 1, ws_mb, sink);
    run_cp_async<128, 8, 2>(kv, idx, ctas, 1, ws_mb, sink);
    run_cp_async<128, 8, 3>(kv, idx, ctas, 1, ws_mb, sink);
    run_cp_async<128, 8, 2>(kv, idx, ctas, 2, ws_mb, sink);
    run_cp_async<256, 8, 2>(kv, idx, ctas, 2, ws_mb, sink);
    if (n_rows == 32768) {  // nine TMA boxes per row: far slower (measured ~14.5 us per tile and SM)
      run_tma<2, 1>(map, idx, ctas, 1, ws_mb, sink);
      run_tma<2, 2>(map, idx, ctas, 2, ws_mb, sink);
    }
    if (n_rows == 32768) {  // layout check: a TMA-landed tile equals the cp.async-landed one
      char* out[2];
      std::vector<char> host[2];
      for (int f = 0; f < 2; ++f) {
        cudaMalloc(&out[f], kTileBytes);
        host[f].resize(kTileBytes);
      }
      const size_t smem = kTileBytes + 1024;
      cudaFuncSetAttribute(land_one_tile<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
      cudaFuncSetAttribute(land_one_tile<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
      land_one_tile<0><<<1, 256, smem>>>(kv, map, idx, out[0]);
      land_one_tile<1><<<1, 256, smem>>>(kv, map, idx, out[1]);
      for (int f = 0; f < 2; ++f) cudaMemcpy(host[f].data(), out[f], kTileBytes, cudaMemcpyDeviceToHost);
      printf("layout check (TMA rows vs cp.async, one tile): %s (%s)\n",
             memcmp(host[0].data(), host[1].data(), kTileBytes) == 0 ? "identical" : "DIFFERENT",
             cudaGetErrorString(cudaGetLastError()));
    }
  }
  return 0;
}
