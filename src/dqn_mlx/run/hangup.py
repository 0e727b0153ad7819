"""A closed terminal (SIGHUP: a closed window, a dropped SSH session): the process goes on to
a resumable stop, and what it prints goes to a log file instead of the terminal. Light (no MLX),
so that the sweep's driver uses it too."""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from pathlib import Path

HANGUP_LOG = "hangup.log"
"""What a process prints once its terminal is gone, in its folder (a run's, or a sweep's
weights dir): the stop and the command that resumes it."""


def print_to_log(folder: Path) -> None:
    """From now on, this process's stdout and stderr go to ``folder/hangup.log`` (appended):
    its terminal is gone, a write to it would fail (EIO, or EPIPE for a pipe whose reader
    went with it) and end the process before its state is saved. At the descriptor level, so
    that every writer follows (print, rich's live display); what was buffered for the
    terminal lands in the log. Where the log cannot be opened, nowhere."""
    try:
        log = os.open(folder / HANGUP_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        log = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a stream already closed, or not a file
            os.dup2(log, stream.fileno())
    os.close(log)
    leave_terminal()


def leave_terminal() -> None:
    """The output goes to a file from now on: a live display (``TerminalProgress``, the
    sweep's table, drawn by rich's console) redraws no more, lines printed meanwhile come out
    plain, and its last state is written once, without colours, when it closes."""
    from rich import get_console

    console = get_console()
    console.is_interactive, console.no_color, console.soft_wrap = False, True, True
