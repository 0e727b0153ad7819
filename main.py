"""dqn-mlx entry point: `uv run main.py --mode train --env BreakoutNoFrameskip-v4`."""

from dqn_mlx.cli import run

if __name__ == "__main__":
    run()
