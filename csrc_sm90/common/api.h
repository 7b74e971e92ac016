// Host launchers of the sm90 kernels; the only interface the torch binding sees.
#pragma once
#include <cuda_runtime.h>

#include "params.h"

namespace flashmla_sm90 {

enum class DType { kBF16, kFP16 };

// Each returns the launch error (cudaSuccess when launched).
cudaError_t launch_plan(const PlanParams& p, cudaStream_t stream);
cudaError_t launch_combine(const CombineParams& p, DType dtype, cudaStream_t stream);

template <typename Element, int kHeadDimQK, KeySource kSource>
cudaError_t launch_attention(const AttentionParams& p, int num_parts, cudaStream_t stream);

// Dispatch over the compiled instantiations (instantiations/*.cu); cudaErrorInvalidValue if absent.
cudaError_t launch_attention(const AttentionParams& p, DType dtype, int head_dim_qk, KeySource source,
                             int num_parts, cudaStream_t stream);

}  // namespace flashmla_sm90
