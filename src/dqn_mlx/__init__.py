"""dqn-mlx: DQN (Mnih et al. 2013, 2015) in MLX.

Importing the package changes nothing in the process. A platform's faster layers live in
``dqn_mlx.accel``: ``platform_compute`` names the ``Compute`` a learner is built with, which
the command line asks for once the device is chosen (``--no-accel``: MLX's own).

Layout, in the order of the data flow:
- ``config``: every hyperparameter, and the papers' presets;
- ``core``: the algorithm (environment, replay memory, network, learner, policy, the loop);
- ``run``: what a run leaves behind (epoch ends, checkpoints, resume, metrics, loggers);
- ``evaluate`` and ``report``: the papers' protocols, the results table, plots and videos;
- ``accel``: a platform's layers and optimizer steps; ``cli`` and ``bench``: the command line.
"""

__version__ = "0.1.0"
