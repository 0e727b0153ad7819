"""A closed terminal (SIGHUP: a closed window, a dropped SSH session) or a pipe whose reader is
gone: what the process prints goes to a log file from then on, so that no failed write to a
terminal or pipe ends it before it saved its work. Light (no MLX): the sweep's driver uses it
too."""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any, TextIO

HANGUP_LOG = "hangup.log"
"""What a process prints once its terminal is gone, in its folder (a run's, or a sweep's
weights dir): the stop and the command that resumes it."""


def print_to_log(folder: Path) -> None:
    """From now on, this process's stdout and stderr go to ``folder/hangup.log`` (appended):
    its terminal is gone, a write to it would fail (EIO, or EPIPE for a pipe whose reader
    went with it) and end the process before its state is saved. At the descriptor level, so
    that every writer follows (print, rich's live display); what was buffered for the
    terminal lands in the log. The folder is made if need be (its output has nowhere else
    to go, a refusal's message included); where the log cannot be opened, nowhere."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        log = os.open(folder / HANGUP_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        log = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a stream already closed, or not a file
            os.dup2(log, stream.fileno())
    os.close(log)
    leave_terminal()


def leave_terminal() -> None:
    """The output goes to a file from now on: a live display on rich's global console
    (``TerminalProgress``, eval's live line) redraws no more, lines printed meanwhile come out
    plain, and its last state is written once, without colours, when it closes. (The sweep's
    table has a console of its own: ``SweepView.leave_terminal``.)"""
    from rich import get_console

    console = get_console()
    console.is_interactive, console.no_color, console.soft_wrap = False, True, True


class _LogWhenReaderGone:
    """A stdout or stderr whose writes, once its reader is gone (BrokenPipeError), go to the
    log (``print_to_log``) and are made again there; everything else is the stream's."""

    def __init__(self, stream: TextIO, folder: Path):
        self.stream, self.folder = stream, folder

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            print_to_log(self.folder)
            return self.stream.write(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            print_to_log(self.folder)
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def log_when_reader_gone(folder: Path) -> None:
    """From now on, a write to stdout or stderr whose reader is gone (a pipe closed:
    ``... | head``, a ``tee`` that died) moves the output to ``folder/hangup.log`` and goes
    on, instead of failing and ending a training as a failed write before it saved."""
    if not isinstance(sys.stdout, _LogWhenReaderGone):
        sys.stdout = _LogWhenReaderGone(sys.stdout, folder)
    if not isinstance(sys.stderr, _LogWhenReaderGone):
        sys.stderr = _LogWhenReaderGone(sys.stderr, folder)
