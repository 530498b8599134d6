"""Silence trimming: the sample range left after cutting quiet 10 ms frames at both ends of a waveform.

One definition for the runtime (the teacher's readings, :mod:`vssflow_cli.teacher`) and training (corpus clips,
:mod:`vssflow_cli.train.corpus`); numpy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def frame_db(wave: np.ndarray, sr: int) -> np.ndarray:
    """RMS in dBFS of consecutive 10 ms frames of ``wave`` (N,): (ceil(N / (sr / 100)),); a trailing partial frame
    counts as a frame padded with zeros."""
    import numpy as np

    hop = sr // 100
    n = -(-len(wave) // hop)
    x = np.pad(wave, (0, n * hop - len(wave))).reshape(n, hop)
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2, axis=1) + 1e-12)


def trim_bounds(
    wave: np.ndarray, sr: int, rel_db: float = -40.0, abs_db: float | None = None, pad_s: float = 0.02
) -> tuple[int, int]:
    """``[lo, hi)`` of ``wave`` without the 10 ms frames at either end that are quieter than ``rel_db`` below the
    loudest frame (and, with ``abs_db``, than ``abs_db`` dBFS), ``pad_s`` of margin kept; (0, 0) if all are quiet.

    A trailing partial frame counts as a frame padded with zeros.
    """
    if wave.size == 0:
        return 0, 0
    hop = sr // 100
    lo, hi = loud_frames(frame_db(wave, sr), rel_db, abs_db)
    if hi == 0:
        return 0, 0
    pad = int(pad_s * sr)
    return max(0, lo * hop - pad), min(len(wave), hi * hop + pad)


def loud_frames(db: np.ndarray, rel_db: float = -40.0, abs_db: float | None = None) -> tuple[int, int]:
    """``[first, last + 1)`` of the frames of level ``db`` (F,) louder than ``rel_db`` below the loudest (and, with
    ``abs_db``, than ``abs_db``); (0, 0) if none is. The rule of :func:`trim_bounds`, for levels given per frame."""
    import numpy as np

    if len(db) == 0:
        return 0, 0
    floor = db.max() + rel_db if abs_db is None else max(db.max() + rel_db, abs_db)
    idx = np.flatnonzero(db > floor)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)
