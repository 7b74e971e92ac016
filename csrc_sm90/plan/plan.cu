// Split-KV planner: one CTA computes the schedule on the device (no host sync, graph-capturable).
//
// Each request costs ceil(seqlen / 64) tiles plus a fixed overhead; the concatenated costs are cut
// into num_parts equal runs, one per CTA column of the decode grid. A part covers a contiguous range
// of (request, tile) pairs; a request touched by n parts has n splits, merged by the combine kernel.
// Deterministic plans give every request one part of its own (no split), or with fewer parts than requests
// a contiguous run of whole requests per part (persistent CTAs): batch invariant either way. Uniform
// plans (sparse decode: every run is topk keys) cut every request into k equal parts.
// A split costs a float32 partial write and the combine: when there are parts for all requests and
// none costs more than kSplitWorthOverheadPercent above an equal cut, whole requests are the faster plan
// (measured on the H100: 4-10 % on b = 128 memory-bound rows; docs/benchmarks/sm90-dense-decode.md).
// Uniform-tile plans (uniform_tiles > 0; the sparse prefill when whole tokens would leave its persistent CTAs
// over 15 % idle, e.g. fewer tokens than CTAs: binding.cpp) cut the tokens' pairs of tiles into num_parts equal
// runs, one CTA each; only the tokens at part boundaries are split, and only they get partial-output slots.
// (Not the "uniform plans" above, which cut every request into k parts.)
#include "../common/api.h"

namespace flashmla_sm90 {

constexpr int kPlanThreads = 1024;
constexpr int kSplitWorthOverheadPercent = 10;

// Exclusive prefix sum of data[0..n) in place (shared memory), result total in data[n].
__device__ void block_exclusive_scan(int* data, int n) {
  __shared__ int partial[kPlanThreads];
  const int per = (n + kPlanThreads - 1) / kPlanThreads;
  const int lo = min(n, threadIdx.x * per), hi = min(n, lo + per);
  int sum = 0;
  for (int i = lo; i < hi; ++i) sum += data[i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int offset = 1; offset < kPlanThreads; offset *= 2) {  // Hillis-Steele over the per-thread sums
    const int v = threadIdx.x >= offset ? partial[threadIdx.x - offset] : 0;
    __syncthreads();
    partial[threadIdx.x] += v;
    __syncthreads();
  }
  int run = partial[threadIdx.x] - sum;
  for (int i = lo; i < hi; ++i) {
    const int v = data[i];
    data[i] = run;
    run += v;
  }
  if (threadIdx.x == kPlanThreads - 1) data[n] = partial[kPlanThreads - 1];
  __syncthreads();
}

// The uniform plan in units of tile pairs (the prefill kernel runs tiles in pairs: a cut at an odd tile would
// give both pieces a padded pair). Token r covers pairs [r U, (r + 1) U), part i [i payload, (i + 1) payload).
// No start overhead is counted: every part starts 31-33 tokens alike, and a boundary inside a token always
// leaves both pieces a pair (with an overhead unit, a boundary inside it would make an empty piece).
__device__ void uniform_plan(const PlanParams& p) {
  const int b = p.batch;
  const int64_t unit_per_req = (p.uniform_tiles + 1) / 2;
  const int64_t total = int64_t(b) * unit_per_req;
  const int64_t payload = max(int64_t(1), (total + p.num_parts - 1) / p.num_parts);
  auto first_part = [&](int r) { return int(r * unit_per_req / payload); };
  auto last_part = [&](int r) { return int(((r + 1) * unit_per_req - 1) / payload); };
  auto slots_of = [&](int r) {  // a request in one part is finished by it and needs no slot
    const int n = last_part(r) - first_part(r) + 1;
    return n > 1 ? n : 0;
  };
  for (int i = threadIdx.x; i < b; i += blockDim.x) p.num_splits[i] = slots_of(i);
  __syncthreads();
  block_exclusive_scan(p.num_splits, b);  // in global memory: b may be a prefill's s_q (70 000+)
  for (int part = threadIdx.x; part < p.num_parts; part += blockDim.x) {
    const int64_t lo = part * payload, hi = min(total, lo + payload);
    if (lo >= total) {
      p.schedule[part] = SchedulePart{1, 0, 0, 0, 0, -1, 0, 0};
      continue;
    }
    const int begin_req = int(lo / unit_per_req), end_req = int((hi - 1) / unit_per_req);
    SchedulePart s;
    s.begin_req = begin_req;
    s.begin_tile = int(2 * (lo - begin_req * unit_per_req));
    s.end_req = end_req;
    s.end_tile = int(min(int64_t(p.uniform_tiles), 2 * (hi - end_req * unit_per_req)));
    s.begin_slot = p.num_splits[begin_req] + (part - first_part(begin_req));
    s.combine_req = slots_of(end_req) > 0 && first_part(end_req) == part ? end_req : -1;
    s.pad1 = s.pad2 = 0;
    p.schedule[part] = s;
  }
}

__global__ void __launch_bounds__(kPlanThreads) plan_kernel(const PlanParams p) {
  extern __shared__ int smem[];
  int* units = smem;                   // [b + 1]: exclusive prefix of request costs
  int* splits = smem + p.batch + 1;    // [b + 1]: exclusive prefix of splits per request
  const int b = p.batch;

  if (p.uniform_tiles > 0) {
    uniform_plan(p);
    return;
  }
  if (p.splits_per_request > 0) {  // part i = split i % k of request i / k, equal tile ranges
    const int k = p.splits_per_request;
    for (int i = threadIdx.x; i <= b; i += blockDim.x) p.num_splits[i] = i * k;
    for (int i = threadIdx.x; i < p.num_parts; i += blockDim.x) {
      const int req = i / k, split = i % k;
      if (req >= b) {
        p.schedule[i] = SchedulePart{1, 0, 0, 0, 0, 0, 0, 0};
        continue;
      }
      const int tiles = (max(p.seqlens[req], 0) + kTileTokens - 1) / kTileTokens;
      p.schedule[i] = SchedulePart{req, split * tiles / k, req, (split + 1) * tiles / k, i, 0, 0, 0};
    }
    return;
  }
  // Every request whole: part i = request i, or with fewer parts than requests, part i = the requests
  // [i b / num_parts, (i + 1) b / num_parts) (persistent CTAs: one launch wave, and a CTA's producer runs on
  // into its next request's tiles).
  auto whole_requests = [&] {
    for (int i = threadIdx.x; i <= b; i += blockDim.x) p.num_splits[i] = i;
    for (int i = threadIdx.x; i < p.num_parts; i += blockDim.x) {
      const int lo = p.num_parts >= b ? i : int(int64_t(i) * b / p.num_parts);
      const int hi = p.num_parts >= b ? i + 1 : int(int64_t(i + 1) * b / p.num_parts);
      p.schedule[i] = lo < min(hi, b) ? SchedulePart{lo, 0, hi - 1, 1 << 30, lo, 0, 0, 0}
                                      : SchedulePart{1, 0, 0, 0, 0, 0, 0, 0};
    }
  };
  if (p.deterministic) {
    whole_requests();
    return;
  }
  __shared__ int max_units;
  if (threadIdx.x == 0) max_units = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < b; i += blockDim.x) {
    units[i] = (max(p.seqlens[i], 0) + kTileTokens - 1) / kTileTokens + kRequestOverheadTiles;
    atomicMax(&max_units, units[i]);
  }
  __syncthreads();
  block_exclusive_scan(units, b);
  const int total = units[b];
  const int payload = max(1, (total + p.num_parts - 1) / p.num_parts);
  if (b <= p.num_parts && int64_t(max_units) * 100 <= int64_t(payload) * (100 + kSplitWorthOverheadPercent)) {
    whole_requests();
    return;
  }

  for (int i = threadIdx.x; i < b; i += blockDim.x) {
    splits[i] = (units[i + 1] - 1) / payload - units[i] / payload + 1;
  }
  __syncthreads();
  block_exclusive_scan(splits, b);
  for (int i = threadIdx.x; i <= b; i += blockDim.x) p.num_splits[i] = splits[i];

  for (int part = threadIdx.x; part < p.num_parts; part += blockDim.x) {
    const int lo = part * payload;
    if (lo >= total) {
      p.schedule[part] = SchedulePart{1, 0, 0, 0, 0, 0, 0, 0};  // end_req < begin_req: no work
      continue;
    }
    const int hi = min(total, lo + payload);
    auto request_of = [&](int unit) {  // largest i with units[i] <= unit
      int a = 0, z = b - 1;
      while (a < z) {
        const int mid = (a + z + 1) / 2;
        if (units[mid] <= unit) a = mid; else z = mid - 1;
      }
      return a;
    };
    const int begin_req = request_of(lo), end_req = request_of(hi - 1);
    SchedulePart s;
    s.begin_req = begin_req;
    s.begin_tile = max(0, lo - units[begin_req] - kRequestOverheadTiles);
    s.end_req = end_req;
    s.end_tile = max(0, hi - units[end_req] - kRequestOverheadTiles);
    s.begin_slot = splits[begin_req] + (part - units[begin_req] / payload);
    s.combine_req = s.pad1 = s.pad2 = 0;
    p.schedule[part] = s;
  }
}

cudaError_t launch_plan(const PlanParams& p, cudaStream_t stream) {
  // prefix sums live in shared memory; a deterministic plan needs none (b may be a prefill's s_q)
  const int smem = p.deterministic || p.splits_per_request > 0 || p.uniform_tiles > 0
                       ? 0 : 2 * (p.batch + 1) * int(sizeof(int));
  if (smem > 200 * 1024) return cudaErrorInvalidValue;
  cudaError_t err = cudaFuncSetAttribute(plan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  plan_kernel<<<1, kPlanThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace flashmla_sm90
