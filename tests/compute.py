"""The ``Compute`` the tests that train use: the platform's, as the command line picks it.

Training tests exercise the algorithm, and the platform's layers and optimizer are proven equal
to MLX's own by tests/test_accel.py and tests/test_onednn_layers.py; MLX's own are run end to
end from the command line by tests/test_cli.py (``--no-accel``), as a Mac runs them."""

from dqn_mlx.accel import platform_compute

COMPUTE = platform_compute()
