import sys
from pathlib import Path

# The speed-ups are switched on before anything imports mlx.core, as the command line does: on
# Linux, OpenBLAS must be in the process before libmlx loads. Tests of the plain definition
# ask for it explicitly (``formulation=DEFINITION``); tests/test_accel.py checks that importing
# the package alone changes nothing.
from dqn_mlx import accel

accel.enable()

sys.path.insert(0, str(Path(__file__).parent))  # tests import catch_env
