"""SIGINT / SIGTERM / SIGHUP: turn them into an exception so every ``finally`` runs.

The exception unwinds through the pipeline: ``subprocess.run`` and the frame reader kill their
ffmpeg child, :func:`vssflow_cli.output.atomic_output` deletes its temp file, temp folders are
removed, and the CLI exits 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP: the terminal or ssh session
closed). After the first signal further ones are ignored so the cleanup itself cannot be cut short.
"""

from __future__ import annotations

import contextlib
import os
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


_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
_received: list[int] = []  # the signal that arrived in the current block, if any
_terminals: list[int] = []  # stdout/stderr where they were a terminal when the block began


def _leave_a_hung_up_terminal() -> None:
    """After a hangup every write to the terminal fails (EIO), which would turn the clean exit into a crash
    (exit 1): point stdout/stderr at /dev/null where their terminal is gone (no longer a tty)."""
    with contextlib.suppress(OSError):
        gone = [fd for fd in _terminals if not os.isatty(fd)]
        if gone:
            null = os.open(os.devnull, os.O_WRONLY)
            for fd in gone:
                os.dup2(null, fd)
            os.close(null)


def _raise(signum: int, frame: FrameType | None) -> None:
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    _received.append(signum)
    if signum == getattr(signal, "SIGHUP", None):
        _leave_a_hung_up_terminal()
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted`; handlers restored after.

    A signal ignored when the block starts stays ignored (``nohup`` ignores SIGHUP; a shell's background
    job, SIGINT). A signal that arrived is what the block ends with, even where :class:`Interrupted` was
    lost on its way up: raised inside a ``__del__`` or weakref finalizer (Python prints "Exception ignored"
    and goes on, so the run would finish and exit 0) or turned into another error (an extension module's
    import reports ``ImportError: initialization failed``, exit 70).
    """
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    _received.clear()
    _terminals[:] = [fd for fd in (1, 2) if os.isatty(fd)]
    for s, h in previous.items():
        if h is not signal.SIG_IGN:
            signal.signal(s, _raise)
    try:
        yield
    except Interrupted:
        raise
    except BaseException as e:
        if _received:
            raise Interrupted(_received[0]) from e
        raise
    else:
        if _received:
            raise Interrupted(_received[0])
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
