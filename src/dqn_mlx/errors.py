"""The one exception type that reaches the user, and how: a one-line message, exit code 2."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input or an impossible request: printed as ``error: <message>``, no traceback."""


@contextmanager
def errors_as_exit_codes() -> Iterator[None]:
    """A UserError is one line on stderr and exit code 2; Ctrl-C, exit code 130. Around the
    whole command line, and inside each command, where click would turn Ctrl-C into its own
    ``Aborted!``."""
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
