"""Covering a clip of any length with the model's fixed window, and joining the results.

The model generates ``window`` latent frames at a time. A longer clip is cut into overlapping
windows, evenly spaced, the last one ending exactly at the clip's end; each window is generated and
decoded to a waveform, and consecutive waveforms are crossfaded over their overlap. A clip shorter
than one window is a single short window (the model accepts any length).

Crossfading happens on waveforms, not latents: decoding each window separately keeps the decoder's
receptive field inside real content, and a sample-domain crossfade is exact and cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Window = tuple[int, int]  # [start, end) in latent frames


def plan_windows(n_frames: int, window: int, overlap: int) -> list[Window]:
    """Windows of ``window`` frames covering [0, n_frames), consecutive ones sharing >= ``overlap``.

    Starts are spread evenly between 0 and ``n_frames - window`` so no window is nearly redundant.
    """
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    if window <= 0 or not 0 <= overlap < window:
        raise ValueError(f"need window > 0 and 0 <= overlap < window, got {window=}, {overlap=}")
    if n_frames <= window:
        return [(0, n_frames)]
    hop = window - overlap
    k = math.ceil((n_frames - window) / hop) + 1
    span = n_frames - window
    starts = [round(j * span / (k - 1)) for j in range(k)]
    return [(s, s + window) for s in starts]


def _check_plan(plan: Sequence[Window], n_frames: int) -> None:
    if not plan or plan[0][0] != 0 or plan[-1][1] != n_frames:
        raise ValueError("plan must start at 0 and end at n_frames")
    for (s0, e0), (s1, e1) in zip(plan, plan[1:]):
        if not (s0 < s1 <= e0 < e1):
            raise ValueError(f"windows {(s0, e0)} and {(s1, e1)} must overlap or touch, in order")


def fade_curves(n: int, kind: str = "equal_power") -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in), each (n,) float32. Linear sums to 1; equal-power has squares summing to 1."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)
    if kind == "linear":
        out, inn = 1.0 - t, t
    elif kind == "equal_power":
        out, inn = np.cos(t * np.pi / 2), np.sin(t * np.pi / 2)
    else:
        raise ValueError(f"unknown crossfade kind {kind!r}")
    return out.astype(np.float32), inn.astype(np.float32)


class Crossfader:
    """Join per-window chunks incrementally, emitting finished samples as soon as they are final.

    ``scale`` samples per plan unit (e.g. samples per latent frame). Memory holds one overlap.
    """

    def __init__(self, plan: Sequence[Window], n_frames: int, scale: int = 1, kind: str = "equal_power") -> None:
        _check_plan(plan, n_frames)
        self.plan, self.scale, self.kind = list(plan), scale, kind
        self._i = 0
        self._buf = np.zeros(0, dtype=np.float32)

    def add(self, chunk: np.ndarray) -> np.ndarray:
        """Add the next window's chunk (its length is fitted to the window); return final samples."""
        if self._i >= len(self.plan):
            raise ValueError("more chunks than windows")
        s, e = self.plan[self._i]
        k = self.scale
        n = (e - s) * k
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)[:n]
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros(n - len(chunk), np.float32)])
        ov = len(self._buf)  # the buffer holds exactly [s, previous end)
        if ov:
            fo, fi = fade_curves(ov, self.kind)
            head = self._buf * fo + chunk[:ov] * fi
            chunk = np.concatenate([head, chunk[ov:]])
        self._i += 1
        cut = (self.plan[self._i][0] - s) * k if self._i < len(self.plan) else n
        self._buf = chunk[cut:]
        return chunk[:cut]

    @property
    def done(self) -> bool:
        return self._i == len(self.plan)


def crossfade(
    chunks: Sequence[np.ndarray], plan: Sequence[Window], n_frames: int, scale: int = 1, kind: str = "equal_power"
) -> np.ndarray:
    """Join all chunks at once: (n_frames * scale,) float32."""
    if len(chunks) != len(plan):
        raise ValueError(f"{len(chunks)} chunks for {len(plan)} windows")
    cf = Crossfader(plan, n_frames, scale, kind)
    return np.concatenate([cf.add(c) for c in chunks])
