#!/usr/bin/env bash
# Compiles the kernels of a FlashMLA checkout (the anchor, for side-by-side timing) into objects for sm_90a,
# on any machine with nvcc (no GPU, no torch): the GPU machine then only links its binding
# (link_flashmla.py). FlashMLA's dense MHA prefill (sm100 CUTLASS FMHA, torch inside) is left out and
# unbound. Nothing of FlashMLA is committed here: the checkout lives in the ignored .anchor/.
#
#   bash benchmarks/anchor/build_kernels.sh .anchor/FlashMLA /path/to/cutlass_library/source
set -euo pipefail
src=$(realpath "$1")
cutlass=$(realpath "$2")  # the pinned nvidia-cutlass wheel's source/ folder (include/, tools/util/include/)
cd "$src"
# The binding without the dense MHA prefill (its sources need torch and sm100).
sed -i '/dense_fwd.h/d; /dense_prefill_/d' csrc/api/api.cpp
mkdir -p objs
flags=(-O3 -std=c++20 -DNDEBUG -D_USE_MATH_DEFINES -Wno-deprecated-declarations -U__CUDA_NO_HALF_OPERATORS__
       -U__CUDA_NO_HALF_CONVERSIONS__ -U__CUDA_NO_HALF2_OPERATORS__ -U__CUDA_NO_BFLOAT16_CONVERSIONS__
       --expt-relaxed-constexpr --expt-extended-lambda --use_fast_math -Icsrc -Icsrc/kerutils/include -Icsrc/sm90
       "-I$cutlass/include" "-I$cutlass/tools/util/include" -gencode arch=compute_90a,code=sm_90a -Xcompiler -fPIC)
grep -o '"csrc/[^"]*\.cu"' setup.py | tr -d '"' | grep -v sm100/prefill/dense | while read -r cu; do
  obj=objs/$(echo "$cu" | tr / _ | sed 's/\.cu$/.o/')
  [ -f "$obj" ] || echo "nvcc ${flags[*]} -c $cu -o $obj"
done | xargs -P "${JOBS:-2}" -I{} sh -c '{}'
ls objs/*.o | wc -l
