// Chooses the compiled attention instantiation for a dtype, head dim, key source and main loop.
#include "../common/api.h"

#include <cutlass/numeric_types.h>

namespace flashmla_sm90 {

namespace {

template <typename Element, int kD, KeySource kSource>
cudaError_t launch_loop(const AttentionParams& p, MainLoop loop, int num_parts, cudaStream_t stream) {
  return loop == MainLoop::kPipelined ? launch_attention<Element, kD, kSource, MainLoop::kPipelined>(p, num_parts, stream)
                                      : launch_attention<Element, kD, kSource, MainLoop::kSplitToken>(p, num_parts, stream);
}

template <typename Element, KeySource kSource>
cudaError_t launch_dim(const AttentionParams& p, int head_dim_qk, MainLoop loop, int num_parts, cudaStream_t stream) {
  if (head_dim_qk == 576) return launch_loop<Element, 576, kSource>(p, loop, num_parts, stream);
  if (head_dim_qk == 512) return launch_loop<Element, 512, kSource>(p, loop, num_parts, stream);
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_attention(const AttentionParams& p, DType dtype, int head_dim_qk, KeySource source,
                             MainLoop loop, int num_parts, cudaStream_t stream) {
  using bf16 = cutlass::bfloat16_t;
  using fp16 = cutlass::half_t;
  if (source == KeySource::kIndexedFp8) {  // fp8_v32 rows carry d_qk 576; queries are bf16; one loop
    if (dtype != DType::kBF16 || head_dim_qk != 576 || loop != MainLoop::kSplitToken) return cudaErrorInvalidValue;
    return launch_attention<bf16, 576, KeySource::kIndexedFp8, MainLoop::kSplitToken>(p, num_parts, stream);
  }
  if (source == KeySource::kIndexed) {  // sparse kernels are bf16 only
    if (dtype != DType::kBF16) return cudaErrorInvalidValue;
    return launch_dim<bf16, KeySource::kIndexed>(p, head_dim_qk, loop, num_parts, stream);
  }
  return dtype == DType::kBF16 ? launch_dim<bf16, KeySource::kPaged>(p, head_dim_qk, loop, num_parts, stream)
                               : launch_dim<fp16, KeySource::kPaged>(p, head_dim_qk, loop, num_parts, stream);
}

}  // namespace flashmla_sm90
