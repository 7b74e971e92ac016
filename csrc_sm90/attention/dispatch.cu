// Chooses the compiled attention instantiation for a dtype, head dim and key source.
#include "../common/api.h"

#include <cutlass/numeric_types.h>

namespace flashmla_sm90 {

cudaError_t launch_attention(const AttentionParams& p, DType dtype, int head_dim_qk, KeySource source,
                             int num_parts, cudaStream_t stream) {
  using bf16 = cutlass::bfloat16_t;
  using fp16 = cutlass::half_t;
  constexpr auto kPaged = KeySource::kPaged, kIndexed = KeySource::kIndexed, kIndexedFp8 = KeySource::kIndexedFp8,
                 kPagedFp8 = KeySource::kPagedFp8;
  if (source == kIndexedFp8 || source == kPagedFp8) {  // fp8_v32 rows carry d_qk 576; queries are bf16
    if (dtype != DType::kBF16 || head_dim_qk != 576) return cudaErrorInvalidValue;
    return source == kPagedFp8 ? launch_attention<bf16, 576, kPagedFp8>(p, num_parts, stream)
                               : launch_attention<bf16, 576, kIndexedFp8>(p, num_parts, stream);
  }
  if (source == kIndexed) {  // sparse kernels are bf16 only
    if (dtype != DType::kBF16) return cudaErrorInvalidValue;
    if (head_dim_qk == 576) return launch_attention<bf16, 576, kIndexed>(p, num_parts, stream);
    if (head_dim_qk == 512) return launch_attention<bf16, 512, kIndexed>(p, num_parts, stream);
    return cudaErrorInvalidValue;
  }
  const bool is_bf16 = dtype == DType::kBF16;
  if (head_dim_qk == 576) {
    return is_bf16 ? launch_attention<bf16, 576, kPaged>(p, num_parts, stream)
                   : launch_attention<fp16, 576, kPaged>(p, num_parts, stream);
  }
  if (head_dim_qk == 512) {
    return is_bf16 ? launch_attention<bf16, 512, kPaged>(p, num_parts, stream)
                   : launch_attention<fp16, 512, kPaged>(p, num_parts, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace flashmla_sm90
