"""dqn-mlx: DQN (Mnih et al. 2013, 2015) in MLX.

Importing the package first brings a fast BLAS into the process on Linux (see ``blas.py``):
it must happen before ``mlx.core`` is imported anywhere. It also lets MLX's CPU JIT vectorise
the element-wise kernels it fuses (see ``cpu_kernels.py``), and keeps memory freed between
updates mapped (see ``allocator.py``).
"""

from dqn_mlx.allocator import keep_freed_memory
from dqn_mlx.blas import load_fast_blas
from dqn_mlx.cpu_kernels import use_vectorizing_compiler

BLAS_STATUS = load_fast_blas()
KERNEL_STATUS = use_vectorizing_compiler()
MALLOC_TUNED = keep_freed_memory()

__version__ = "0.1.0"
