// Chooses the compiled dense-decode instantiation for a dtype and head dim.
#include "../common/api.h"

#include <cutlass/numeric_types.h>

namespace flashmla_sm90 {

cudaError_t launch_dense_decode(const DenseDecodeParams& p, DType dtype, int head_dim_qk, int num_parts,
                                int num_sms, cudaStream_t stream) {
  const bool bf16 = dtype == DType::kBF16;
  if (head_dim_qk == 576) {
    return bf16 ? launch_dense_decode<cutlass::bfloat16_t, 576>(p, num_parts, num_sms, stream)
                : launch_dense_decode<cutlass::half_t, 576>(p, num_parts, num_sms, stream);
  }
  if (head_dim_qk == 512) {
    return bf16 ? launch_dense_decode<cutlass::bfloat16_t, 512>(p, num_parts, num_sms, stream)
                : launch_dense_decode<cutlass::half_t, 512>(p, num_parts, num_sms, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace flashmla_sm90
