"""A run folder, ``<weights dir>/<env-id>/<run-name>/``, and the rules that keep a run in it.

Invariants:
1. One process per run folder, for the whole run: ``hold_run_folder`` takes an exclusive
   ``flock`` on the folder itself, held by an open descriptor, so the kernel releases it when
   the process ends however it ends (a crashed run never blocks its own resume). ``.lock`` in
   the folder names the holder's pid, for the refusal's message only.
2. A run name is one folder name: no separators, not ``.`` or ``..``, not absolute.
3. Leftovers of interrupted writes (``files.atomic_write``'s temporary files, and replay
   memories no training state refers to) are removed when a run takes its folder: nothing
   else writes there while it holds the lock.
"""

from __future__ import annotations

import fcntl
import os
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dqn_mlx.errors import UserError
from dqn_mlx.files import TEMPORARY_PREFIX
from dqn_mlx.run.formats import is_temporary_v1

RUNS = Path("runs")
"""Where a user's runs, their evaluations and reports go by default (``--weights-dir``)."""
SHIPPED = "weights"
"""The folder, at the root of a dqn-mlx checkout, of the runs the repository ships (README
"Results"): nothing but their shipping writes there."""


def is_shipped(path: Path) -> bool:
    """Whether ``path`` lies under the ``weights/`` folder of a dqn-mlx checkout: a folder
    whose ``pyproject.toml`` names the project. Found from ``path`` itself, not from where the
    package is installed, so that a wheel install, or another checkout's environment, still
    leaves a checkout's shipped results as shipped."""
    return any(
        folder.name == SHIPPED and _is_checkout(folder.parent)
        for folder in Path(path).resolve().parents
    )


def _is_checkout(root: Path) -> bool:
    """Whether ``root`` holds dqn-mlx's ``pyproject.toml``."""
    try:
        with (root / "pyproject.toml").open("rb") as file:
            project = tomllib.load(file).get("project")
    except (OSError, ValueError):  # unreadable, not UTF-8, not TOML: no checkout of ours
        return False
    return isinstance(project, dict) and project.get("name") == "dqn-mlx"


def results_folder(load_path: Path, env_id: str) -> Path:
    """Where an evaluation of the checkpoint ``load_path`` writes: beside it, in its run's
    folder; for a shipped run, the folder of the same name under ``RUNS``, so that the
    shipped results stay as shipped whatever a user evaluates."""
    load_path = Path(load_path)
    if is_shipped(load_path):
        return run_folder(RUNS, env_id, load_path.parent.name)
    return load_path.parent


def run_folder(weights_dir: Path, env_id: str, run_name: str) -> Path:
    """Folder of one run: ``<weights dir>/<env-id>/<run name>/`` (``/`` in v5 ids becomes
    ``_``)."""
    return Path(weights_dir) / env_id.replace("/", "_") / run_name


LOCK_FILE = ".lock"
RUN_FILES = ("train_state.safetensors", "metrics.jsonl", "games.csv", "epoch_1.safetensors")
"""Any of these in a folder means a run trained there."""


def check_run_name(name: str) -> str:
    """``name`` when it is one folder name (invariant 2), else a UserError."""
    if (
        not name.strip()
        or name in (".", "..")
        or "/" in name
        or (os.sep != "/" and os.sep in name)
        or "\0" in name
    ):
        raise UserError(
            f"--run-name {name!r}: a run name is one folder name (no '/', not '.' or '..'); "
            "the folder goes under <weights-dir>/<env-id>/"
        )
    return name


@contextmanager
def hold_run_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock (invariant 1) while the body runs; a UserError naming the
    holder's pid when another process has it."""

    def refused(holder: str) -> UserError:
        pid = f"pid {int(holder)}" if holder.isdigit() else "pid unknown"
        return UserError(
            f"{folder} is in use by another training process ({pid}); wait for it to finish "
            "or stop it (Ctrl-C), or train under another --run-name"
        )

    with hold_folder(folder, LOCK_FILE, str(os.getpid()), refused):
        yield


@contextmanager
def hold_folder(
    folder: Path, lock_file: str, holder: str, refused: Callable[[str], UserError]
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` while the body runs, taken without waiting
    and held by an open descriptor, so that the kernel releases it however the process ends.
    ``lock_file`` in the folder holds ``holder`` (who holds it) meanwhile, for the message
    only: another process gets ``refused(what it reads there)``, "" where it reads nothing."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refused(_read_holder(folder / lock_file)) from None
        (folder / lock_file).write_text(f"{holder}\n")
        try:
            yield
        finally:
            with suppress(OSError):
                (folder / lock_file).unlink()
    finally:
        os.close(fd)  # releases the lock


def is_held(folder: Path) -> bool:
    """Whether a process holds ``folder``'s lock now (a probe: taken and let go at once)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _is_replay(name: str) -> bool:
    return name.startswith("replay") and name.endswith(".npz")


def remove_old_replays(folder: Path, keep: str | None) -> None:
    """Delete the replay memories other than ``keep`` (the one the state on disk names)."""
    for path in folder.iterdir():
        if _is_replay(path.name) and path.name != keep:
            path.unlink(missing_ok=True)


def remove_leftovers(folder: Path, keep_replay: str | None, log: Callable[[str], None]) -> int:
    """Delete the folder's temporary files and the replay memories other than ``keep_replay``
    (invariant 3); says how much it freed and returns the bytes."""
    freed, count = 0, 0
    for path in folder.iterdir():
        name = path.name
        stale_replay = _is_replay(name) and name != keep_replay
        temporary = name.startswith(TEMPORARY_PREFIX) or is_temporary_v1(name)
        if path.is_file() and (stale_replay or temporary):
            with suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                freed, count = freed + size, count + 1
    if count:
        log(
            f"removed {count} leftover file{'s' if count > 1 else ''} of interrupted writes "
            f"from {folder} ({freed / 1e6:,.1f} MB freed)"
        )
    return freed


def clear_unfinished_run(folder: Path, log: Callable[[str], None]) -> None:
    """``--restart``: delete the files of a run that stopped before its first training state
    (it cannot be resumed); a run that can be resumed is refused, never deleted."""
    if (folder / RUN_FILES[0]).exists():
        raise UserError(
            f"--restart: {folder} holds a resumable run; continue it with --resume, or train "
            "under another --run-name (nothing was deleted)"
        )
    removed = [p for p in folder.iterdir() if p.is_file() and p.name != LOCK_FILE]
    for path in removed:
        path.unlink()
    if removed:
        log(f"--restart: deleted the {len(removed)} files of the unfinished run in {folder}")
