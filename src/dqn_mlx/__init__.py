"""dqn-mlx: DQN (Mnih et al. 2013, 2015) in MLX.

Importing the package changes nothing in the process. Platform speed-ups live in
``dqn_mlx.accel`` and are switched on by ``dqn_mlx.accel.enable()``, which the command line
calls before MLX loads.

Layout, in the order of the data flow:
- ``config``: every hyperparameter, and the papers' presets;
- ``core``: the algorithm (environment, replay memory, network, learner, policy, the loop);
- ``run``: what a run leaves behind (epoch ends, checkpoints, resume, metrics, loggers);
- ``evaluate`` and ``report``: the papers' protocols, the results table, plots and videos;
- ``accel``: opt-in speed for a platform; ``cli`` and ``bench``: the command line.
"""

__version__ = "0.1.0"
