"""Links FlashMLA's binding (compiled here, against this machine's torch) with the kernel objects that
build_kernels.sh made, into <checkout>/flash_mla/cuda*.so. Run on the GPU machine:

    cd .anchor/FlashMLA && python3 ../../benchmarks/anchor/link_flashmla.py build_ext --inplace
"""
import glob
import os

import cutlass_library
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension

cutlass = os.path.join(os.path.dirname(cutlass_library.__file__), "source")
setup(name="flash_mla_anchor", ext_modules=[CUDAExtension(
    name="flash_mla.cuda", sources=["csrc/api/api.cpp"],
    include_dirs=[os.path.abspath(p) for p in ("csrc", "csrc/kerutils/include", "csrc/sm90")] +
                 [os.path.join(cutlass, "include"), os.path.join(cutlass, "tools/util/include"),
                  os.path.join(CUDA_HOME, "include", "cccl")],  # cuda/std for the host compiler
    extra_objects=sorted(os.path.abspath(p) for p in glob.glob("objs/*.o")),
    extra_compile_args={"cxx": ["-O3", "-std=c++20", "-DNDEBUG", "-Wno-deprecated-declarations"]})],
    cmdclass={"build_ext": BuildExtension})
