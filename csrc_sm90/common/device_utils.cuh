// Small device helpers: cp.async groups, named barriers, quad reductions.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace flashmla_sm90 {

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Barrier among `threads` threads (a multiple of 32) on hardware barrier `id` (0 is __syncthreads). The
// "memory" clobber keeps the compiler from moving shared-memory accesses across it (the warpgroups hand
// row maxima and row sums over through shared memory around these barriers).
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// The same where the participating warps reach the barrier from different instructions (warpgroups with
// different code): bar.sync is barrier.sync.aligned, which requires every thread to execute the same
// barrier instruction (synccheck: "divergent thread(s) in block"); barrier.sync lifts that.
__device__ __forceinline__ void named_barrier_unaligned(int id, int threads) {
  asm volatile("barrier.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// A 32-bit store to shared memory through a generic pointer (cute's swizzled smem tensors hand out
// generic addresses: stored through, they would be generic st, not st.shared). Ordered before the
// fences and wgmma issues that follow (all volatile asm); only those read what it writes.
__device__ __forceinline__ void store_shared_u32(void* at, uint32_t bits) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(at))), "r"(bits));
}

// One 8-byte store of two floats (at: 8-byte aligned, global). Through a float2 pointer the compiler split
// half of the epilogue's partial stores into two 4-byte stores.
__device__ __forceinline__ void store_global_f32x2(float* at, float a, float b) {
  asm volatile("st.global.v2.f32 [%0], {%1, %2};\n" ::"l"(at), "f"(a), "f"(b) : "memory");
}

// Programmatic dependent launch (sm_90): the next kernel in the stream, launched with programmatic
// stream serialization, may start once every CTA of this one has called launch_dependent_grids() or
// exited; it must call wait_for_prerequisite_grids() before it reads what this one wrote (that waits
// for this grid's completion and memory flush). Both are no-ops without such a launch.
__device__ __forceinline__ void launch_dependent_grids() { asm volatile("griddepcontrol.launch_dependents;\n" ::); }
__device__ __forceinline__ void wait_for_prerequisite_grids() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

// 2^x in one MUFU op (flushes results below 2^-126 to 0): softmax weights that small are 0 in bf16/fp16
// P anyway; exp2f adds a denormal fix-up around the same op.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
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

// A 4 x 4 transpose of 32-bit values across the lanes of a quad: lane q's v[s] becomes lane s's v[q]. Two
// butterfly stages; in each, a lane keeps the elements whose stage bit matches its own and trades the others.
__device__ __forceinline__ void quad_transpose(uint32_t (&v)[4], int lane) {
#pragma unroll
  for (int m = 1; m <= 2; m *= 2) {
    const bool hi = (lane & m) != 0;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      if (t & m) continue;
      const uint32_t got = __shfl_xor_sync(0xffffffff, hi ? v[t] : v[t | m], m);
      if (hi) {
        v[t] = got;
      } else {
        v[t | m] = got;
      }
    }
  }
}

constexpr float kLn2 = 0.69314718055994530942f;

}  // namespace flashmla_sm90
