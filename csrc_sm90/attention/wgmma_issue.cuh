// Issuing one warpgroup GEMM as one committed wgmma group (the caller waits for it later).
#pragma once

#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>

namespace flashmla_sm90 {

// C (+)= A B over every k-block of the fragments; with zero_init the first k-block overwrites C.
template <class TiledMma, class FragA, class FragB, class FragC>
__device__ __forceinline__ void issue_wgmma(TiledMma& mma, const FragA& a, const FragB& b, FragC& c, bool zero_init) {
  using namespace cute;
  if (zero_init) mma.accumulate_ = GMMA::ScaleOut::Zero;
  warpgroup_fence_operand(c);
  warpgroup_arrive();
  CUTE_UNROLL
  for (int kb = 0; kb < size<2>(a); ++kb) {
    cute::gemm(mma, a(_, _, kb), b(_, _, kb), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
}

// C (+)= A B over k-blocks [kBegin, kEnd) inside an open wgmma batch (the caller arrives and commits);
// mma.accumulate_ decides whether the first of them overwrites C.
template <int kBegin, int kEnd, class TiledMma, class FragA, class FragB, class FragC>
__device__ __forceinline__ void gemm_kblocks(TiledMma& mma, const FragA& a, const FragB& b, FragC& c) {
  using namespace cute;
  CUTE_UNROLL
  for (int kb = kBegin; kb < kEnd; ++kb) {
    cute::gemm(mma, a(_, _, kb), b(_, _, kb), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
}

}  // namespace flashmla_sm90
