"""Error classes and the exit codes they map to.

Every error a user can cause is one of these; the CLI prints ``str(err)`` as one line and exits
with ``err.exit_code``. Anything else is an internal error (exit 70).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED_INPUTS = 1  # a batch finished but some inputs failed
EXIT_USAGE = 2  # bad option values, conflicting flags
EXIT_INPUT = 3  # unreadable / unsupported input file, bad script
EXIT_MODEL = 4  # missing or tampered model bundle, unavailable backend
EXIT_OUTPUT = 5  # output not writable / exists without --overwrite
EXIT_INTERNAL = 70  # a bug: please report
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class VssflowError(Exception):
    """Base class: a one-line, user-facing message naming the problem and the fix."""

    exit_code = EXIT_INTERNAL


class UsageError(VssflowError):
    exit_code = EXIT_USAGE


class InputError(VssflowError):
    exit_code = EXIT_INPUT


class ModelError(VssflowError):
    exit_code = EXIT_MODEL


class OutputError(VssflowError):
    exit_code = EXIT_OUTPUT


class ContainerError(VssflowError):
    """The output's container cannot hold this input's video. Exit 2 like a usage error, but it is
    about one input (a default output name keeps the input's type), so a batch goes on."""

    exit_code = EXIT_USAGE
