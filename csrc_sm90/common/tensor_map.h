// Host side: the driver's cuTensorMapEncodeTiled, fetched through the runtime so nothing links
// libcuda (used by the torch binding and by benchmarks/micro). No torch here.
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>

namespace flashmla_sm90 {

using TensorMapEncode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                     const cuuint64_t*, const cuuint32_t*, const cuuint32_t*,
                                     CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
                                     CUtensorMapFloatOOBfill);

// nullptr when the driver lacks it
inline TensorMapEncode tensor_map_encoder() {
  static const TensorMapEncode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    const bool ok = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                                     &found) == cudaSuccess && found == cudaDriverEntryPointSuccess;
    return ok ? reinterpret_cast<TensorMapEncode>(fn) : nullptr;
  }();
  return encode;
}

}  // namespace flashmla_sm90
