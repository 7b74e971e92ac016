"""Without a GPU, run this package's tests with the Triton interpreter (kernels on CPU tensors).

TRITON_INTERPRET must be set before flashmla_triton's kernels are imported (triton.jit reads it when
the kernels are defined); flashmla imports backends lazily, so setting it here is early enough.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
