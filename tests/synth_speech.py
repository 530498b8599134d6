"""Tests use the espeak-ng synthesiser of the training tools (the evaluation's espeak row)."""

from vssflow_cli.train.espeak_speech import espeak_speech

__all__ = ["espeak_speech"]
