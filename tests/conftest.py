import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests import catch_env and compute

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n: each worker (and each main.py it starts) computes on one OpenMP thread, so the
    # workers share the cores instead of oversubscribing them.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
