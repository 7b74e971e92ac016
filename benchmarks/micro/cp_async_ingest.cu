// How fast can one CTA per SM land 64-row x 1152-byte tiles with cp.async (the sm90 kernel's gather),
// or with TMA (one thread, nine 64 x 64 swizzle-128B boxes per tile from a 3-D tensor map of the
// paged cache), as a function of how many tiles it keeps in flight? No compute: the upper bound the
// attention loop can reach, and the time one tile takes to land (depth 1).
//
//   nvcc -O3 -arch=sm_90a -o /tmp/ingest benchmarks/micro/cp_async_ingest.cu && /tmp/ingest [CTAs]
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cuda.h>
#include <cuda_runtime.h>

#include "../../csrc_sm90/common/tensor_map.h"
#include "launch_timer.h"

constexpr int kRowBytes = 1152, kRows = 64, kTileBytes = kRows * kRowBytes;

template <int kDepth>
__global__ void __launch_bounds__(256, 1) ingest(const char* kv, const int* pages, int tiles_per_cta, int page_rows,
                                                 int n_pages, unsigned long long* sink) {
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, row = tid / 4, c0 = tid % 4;
  auto issue = [&](int t) {
    const int tile = blockIdx.x * tiles_per_cta + t;
    const int page = pages[(tile * kRows / page_rows) % n_pages];
    const char* src = kv + (int64_t(page) * page_rows + (tile * kRows + row) % page_rows) * kRowBytes;
    const uint32_t dst = uint32_t(__cvta_generic_to_shared(smem + (t % kDepth) * kTileBytes + row * kRowBytes));
    for (int i = 0; i < kRowBytes / 64; ++i) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + (c0 + 4 * i) * 16), "l"(src + (c0 + 4 * i) * 16));
    }
    asm volatile("cp.async.commit_group;\n");
  };
  for (int t = 0; t < kDepth - 1 && t < tiles_per_cta; ++t) issue(t);
  unsigned long long acc = 0;
  for (int t = 0; t < tiles_per_cta; ++t) {
    if (t + kDepth - 1 < tiles_per_cta) issue(t + kDepth - 1);
    else asm volatile("cp.async.commit_group;\n");
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kDepth - 1));
    __syncthreads();
    acc += smem[(t % kDepth) * kTileBytes + tid * 4];
    __syncthreads();
  }
  if (acc == 12345) *sink = acc;
}

// TMA: thread 0 issues the nine boxes of a tile on the buffer's mbarrier; every thread waits on it.
template <int kDepth>
__global__ void __launch_bounds__(256, 1) ingest_tma(const __grid_constant__ CUtensorMap map, const int* pages,
                                                     int tiles_per_cta, int page_rows, int n_pages,
                                                     unsigned long long* sink) {
  extern __shared__ __align__(128) char tma_smem[];
  __shared__ __align__(8) uint64_t full[kDepth];
  const int tid = threadIdx.x;
  const uint32_t base = uint32_t(__cvta_generic_to_shared(tma_smem));
  const uint32_t tiles_base = (base + 1023) & ~1023u;
  if (tid == 0) {
    for (int i = 0; i < kDepth; ++i) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(uint32_t(__cvta_generic_to_shared(&full[i]))));
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n");
  }
  __syncthreads();
  auto issue = [&](int t) {
    if (tid != 0) return;
    const int tile = blockIdx.x * tiles_per_cta + t;
    const int page = pages[(tile * kRows / page_rows) % n_pages];
    const int row0 = (tile * kRows) % page_rows;
    const uint32_t bar = uint32_t(__cvta_generic_to_shared(&full[t % kDepth]));
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(kTileBytes));
    for (int slab = 0; slab < kRowBytes / 128; ++slab) {
      const uint32_t dst = tiles_base + (t % kDepth) * kTileBytes + slab * 8192;
      asm volatile(
          "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
          ::"r"(dst), "l"(&map), "r"(slab * 64), "r"(row0), "r"(page), "r"(bar) : "memory");
    }
  };
  for (int t = 0; t < kDepth - 1 && t < tiles_per_cta; ++t) issue(t);
  unsigned long long acc = 0;
  for (int t = 0; t < tiles_per_cta; ++t) {
    if (t + kDepth - 1 < tiles_per_cta) issue(t + kDepth - 1);
    const uint32_t bar = uint32_t(__cvta_generic_to_shared(&full[t % kDepth]));
    const uint32_t parity = (t / kDepth) & 1;
    asm volatile(
        "{\n .reg .pred p;\n wait:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra wait;\n}\n"
        ::"r"(bar), "r"(parity) : "memory");
    acc += tma_smem[(tiles_base - base) + (t % kDepth) * kTileBytes + tid * 4];
    __syncthreads();  // every thread is done with the buffer before it is refilled
  }
  if (acc == 12345) *sink = acc;
}

constexpr int kTilesPerCta = 128;

// Times `launch` (2 warm-up launches, then the mean of 5) and prints one line.
template <typename Launch>
void report(Launch launch, int sms, const char* where, const char* how, int depth) {
  const float ms = mean_launch_ms(launch);
  const double bytes = double(sms) * kTilesPerCta * kTileBytes;
  printf("%s  %-8s  depth %d  %7.1f us  %6.0f GB/s  %5.2f us per tile per SM  (%s)\n", where, how, depth, ms * 1e3,
         bytes / ms / 1e6, ms * 1e3 / kTilesPerCta, cudaGetErrorString(cudaGetLastError()));
}

template <int kDepth>
void run_tma(const CUtensorMap& map, const int* pages, int n_pages, int page_rows, int sms,
             unsigned long long* sink, const char* where) {
  const size_t smem = size_t(kDepth) * kTileBytes + 1024;
  cudaFuncSetAttribute(ingest_tma<kDepth>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  report([&] { ingest_tma<kDepth><<<sms, 256, smem>>>(map, pages, kTilesPerCta, page_rows, n_pages, sink); },
         sms, where, "TMA", kDepth);
}

// The paged cache as a 3-D tensor (dims, row in page, page) of 16-bit values, boxes of 64 x 64 x 1.
CUtensorMap make_map(const char* kv, int page_rows, int n_pages) {
  CUtensorMap map{};
  const cuuint64_t dims[3] = {kRowBytes / 2, cuuint64_t(page_rows), cuuint64_t(n_pages)};
  const cuuint64_t strides[2] = {kRowBytes, cuuint64_t(page_rows) * kRowBytes};
  const cuuint32_t box[3] = {64, 64, 1}, elem[3] = {1, 1, 1};
  const CUresult r = flashmla_sm90::tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<char*>(kv), dims, strides, box, elem,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) printf("cuTensorMapEncodeTiled failed: %d\n", int(r));
  return map;
}

template <int kDepth>
void run(const char* kv, const int* pages, int n_pages, int page_rows, int sms, unsigned long long* sink,
         const char* where) {
  const size_t smem = size_t(kDepth) * kTileBytes;
  cudaFuncSetAttribute(ingest<kDepth>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  report([&] { ingest<kDepth><<<sms, 256, smem>>>(kv, pages, kTilesPerCta, page_rows, n_pages, sink); },
         sms, where, "cp.async", kDepth);
}

int main(int argc, char** argv) {
  int sms;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  if (argc > 1) sms = atoi(argv[1]);  // fewer CTAs: one tile's latency when DRAM is not saturated
  printf("%d CTAs\n", sms);
  char* kv;
  cudaMalloc(&kv, size_t(4) << 30);
  cudaMemset(kv, 1, size_t(4) << 30);
  unsigned long long* sink;
  cudaMalloc(&sink, 8);
  const int page_rows = 64;
  // 4 GiB: far beyond L2, every tile comes from DRAM; 24 MiB: L2-resident after the first pass
  for (size_t cache_bytes : {size_t(4) << 30, size_t(24) << 20}) {
    const char* where = cache_bytes > (size_t(1) << 30) ? "DRAM" : "L2  ";
    const int n_pages = int(cache_bytes / (size_t(page_rows) * kRowBytes));
    int* h = new int[n_pages];
    uint32_t x = 12345;
    for (int i = 0; i < n_pages; ++i) h[i] = i;
    for (int i = n_pages - 1; i > 0; --i) {  // random page order, as a block table has
      x = x * 1664525u + 1013904223u;
      const int j = x % (i + 1), t = h[i];
      h[i] = h[j];
      h[j] = t;
    }
    int* pages;
    cudaMalloc(&pages, n_pages * sizeof(int));
    cudaMemcpy(pages, h, n_pages * sizeof(int), cudaMemcpyHostToDevice);
    run<1>(kv, pages, n_pages, page_rows, sms, sink, where);
    run<2>(kv, pages, n_pages, page_rows, sms, sink, where);
    run<3>(kv, pages, n_pages, page_rows, sms, sink, where);
    const CUtensorMap map = make_map(kv, page_rows, n_pages);
    run_tma<1>(map, pages, n_pages, page_rows, sms, sink, where);
    run_tma<2>(map, pages, n_pages, page_rows, sms, sink, where);
    run_tma<3>(map, pages, n_pages, page_rows, sms, sink, where);
    cudaFree(pages);
    delete[] h;
  }
  return 0;
}
