"""dqn-mlx: DQN (Mnih et al. 2013, 2015) in MLX.

Importing the package first brings a fast BLAS into the process on Linux (see ``blas.py``):
it must happen before ``mlx.core`` is imported anywhere.
"""

from dqn_mlx.blas import load_fast_blas

BLAS_STATUS = load_fast_blas()

__version__ = "0.1.0"
