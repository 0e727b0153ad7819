import sys
from pathlib import Path

# dqn_mlx must be imported before anything imports mlx.core: on Linux it brings OpenBLAS into
# the process for MLX's matrix products, which only works before libmlx is loaded.
import dqn_mlx  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent))  # tests import catch_env
