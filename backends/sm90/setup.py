"""Builds flashmla_sm90._C from csrc_sm90 (kernels in .cu files that never include torch; one
instantiation per .cu so ninja builds them in parallel; a thin binding.cpp holds the torch code)."""
import os
import pathlib

from setuptools import setup

HERE = pathlib.Path(__file__).resolve().parent
CSRC = (HERE / ".." / ".." / "csrc_sm90").resolve()


def cutlass_include() -> str:
    try:
        import cutlass_library
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("flashmla-sm90 needs the CuTe/CUTLASS headers: pip install --no-deps "
                         "nvidia-cutlass==4.2.0.0") from exc
    return str(pathlib.Path(cutlass_library.__file__).parent / "source" / "include")


def pip_cuda_includes() -> list:
    """CUDA library headers shipped as pip wheels (nvidia/cu13/include), used when the toolkit lacks them."""
    try:
        import nvidia
    except ImportError:
        return []
    return [str(pathlib.Path(p) / sub / "include") for p in nvidia.__path__ for sub in ("cu13", "cu12")
            if (pathlib.Path(p) / sub / "include").is_dir()]


def extension():
    from torch.utils.cpp_extension import CUDAExtension
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
    sources = [str(CSRC / "binding.cpp"), str(CSRC / "plan" / "plan.cu"), str(CSRC / "combine" / "combine.cu"),
               str(CSRC / "attention" / "dispatch.cu")]
    sources += sorted(str(p) for p in (CSRC / "instantiations").glob("*.cu"))
    sources = [os.path.relpath(s, HERE) for s in sources]  # setuptools refuses absolute source paths
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    includes = [str(CSRC), cutlass_include(), os.path.join(cuda_home, "include", "cccl")] + pip_cuda_includes()
    nvcc = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-DNDEBUG", "-gencode",
            "arch=compute_90a,code=sm_90a", "-Xptxas=-v", "--use_fast_math", "-lineinfo"]
    return CUDAExtension("flashmla_sm90._C", sources, include_dirs=includes,
                         extra_compile_args={"cxx": ["-O3", "-std=c++20"], "nvcc": nvcc})


def variants_file():
    """What was compiled, for the backend's capability table."""
    text = (CSRC / "instantiations" / "variants.txt").read_text()
    (HERE / "flashmla_sm90" / "variants.txt").write_text(text)


if __name__ == "__main__":
    from torch.utils.cpp_extension import BuildExtension
    variants_file()
    setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
