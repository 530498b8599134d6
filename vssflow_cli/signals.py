"""SIGINT / SIGTERM: turn them into an exception so every ``finally`` runs.

The exception unwinds through the pipeline: ``subprocess.run`` and the frame reader kill their
ffmpeg child, :func:`vssflow_cli.output.atomic_output` deletes its temp file, temp folders are
removed, and the CLI exits 130 (SIGINT) or 143 (SIGTERM). After the first signal further ones are
ignored so the cleanup itself cannot be cut short.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from vssflow_cli.errors import EXIT_SIGINT, EXIT_SIGTERM


class Interrupted(BaseException):
    """Raised by our signal handler. A BaseException so ``except Exception`` does not swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}")

    @property
    def exit_code(self) -> int:
        return {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}.get(self.signum, 128 + self.signum)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise(signum: int, frame: FrameType | None) -> None:
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`; handlers restored after."""
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
