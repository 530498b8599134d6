"""Visual features for the tiny model: appearance + motion, computed the same way on any frames.

Frames are uint8 RGB at ``FEATURE_FPS`` and ``VIS_SIZE``x``VIS_SIZE`` (ffmpeg's ``scale=64:64:
flags=area`` or :func:`resize_frames`; the aspect ratio is squashed, like ffmpeg's plain scale).

Per frame (channels last, float32):

- ``video`` (208): 8x8x3 average-pooled appearance (192, ``(x - 0.5) / 0.25`` with x in [0, 1]:
  natural images have mean ~0.5 and std ~0.25, so this is roughly zero-mean unit-scale) followed
  by the 4x4 motion grid (16).
- ``sync`` (18): the 4x4 motion grid (16), global motion energy (1), and its positive change from
  the previous frame (1, onset-like).

Motion energy of a cell = mean |frame_t - frame_{t-1}| over its pixels and channels (x in [0, 1]),
compressed as ``log1p(MOTION_GAIN * d) / log1p(MOTION_GAIN)``: still camera noise (d ~ 0.005)
maps to ~0.05, a moving hand (d ~ 0.05) to ~0.45, a scene cut (d ~ 0.3) to ~1. All scales are
fixed constants (no per-clip normalisation), so features do not depend on how a clip is chunked.
The first frame of a stream has zero motion.

Face and lip features live in :mod:`vssflow_cli.lips`, which builds on this module.
"""

from __future__ import annotations

import numpy as np

FEATURE_FPS = 25
VIS_SIZE = 64
APPEARANCE_GRID = 8
MOTION_GRID = 4
VIDEO_DIM = APPEARANCE_GRID * APPEARANCE_GRID * 3 + MOTION_GRID * MOTION_GRID  # 208
SYNC_DIM = MOTION_GRID * MOTION_GRID + 2  # 18
MOTION_GAIN = 100.0
_MOTION_NORM = float(np.log1p(MOTION_GAIN))

# --------------------------------------------------------------------------- resizing / sampling


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights averaging the input interval each output pixel covers."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


_RESIZE_BLOCK = 16  # frames per block in resize_frames


def _band(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The area matrix as bands: input indices (n_out, K) and their weights (n_out, K), K = widest row."""
    m = _area_matrix(n_in, n_out)
    start = np.argmax(m > 0, axis=1)
    offsets = start[:, None] + np.arange(int((m > 0).sum(axis=1).max()))
    idx = np.minimum(offsets, n_in - 1)
    weights = np.where(offsets < n_in, np.take_along_axis(m, idx, axis=1), 0.0)
    return idx, weights.astype(np.float32)


def _area_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Area-average resize of one axis; float32 out (an integer factor on uint8 sums exactly in uint16)."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x.astype(np.float32, copy=False)
    k = n_in // n_out
    if n_in % n_out == 0 and x.dtype == np.uint8 and k <= 257:  # 257 * 255 fits uint16
        blocks = x.reshape(x.shape[:axis] + (n_out, k) + x.shape[axis + 1 :])
        lead = (slice(None),) * (axis + 1)
        acc = blocks[lead + (0,)].astype(np.uint16)
        for j in range(1, k):  # k strided adds: 5x faster than .sum(axis) over a short middle axis
            acc += blocks[lead + (j,)]
        return acc * np.float32(1.0 / k)
    idx, weights = _band(n_in, n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = np.take(x, idx[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for j in range(1, idx.shape[1]):
        out += np.take(x, idx[:, j], axis=axis) * weights[:, j].reshape(shape)
    return out


def resize_frames(frames: np.ndarray, size: int | tuple[int, int] = VIS_SIZE) -> np.ndarray:
    """Area-average resize of uint8 frames (n, H, W, 3) to (n, h, w, 3) (``size`` int = square).

    Separable, one axis at a time over the few input pixels each output pixel covers (an integer
    factor first: it is the cheapest reduction), 16 frames at a time: a 640x360 frame to 64x64 costs
    ~0.8 ms (the dense product it replaces took 23 ms).
    """
    h, w = (size, size) if isinstance(size, int) else size
    frames = np.asarray(frames)
    if frames.shape[1:3] == (h, w):
        return frames
    (H, W), size_hw = frames.shape[1:3], (h, w)
    order = sorted((1, 2), key=lambda a: ((H, W)[a - 1] % size_hw[a - 1] != 0, -(H, W)[a - 1] / size_hw[a - 1]))
    out = np.empty((frames.shape[0], h, w, *frames.shape[3:]), np.uint8)
    for i in range(0, len(frames), _RESIZE_BLOCK):  # a few frames at a time: the temporaries stay in cache
        x = frames[i : i + _RESIZE_BLOCK]
        for axis in order:
            x = _area_axis(x, size_hw[axis - 1], axis)
        out[i : i + _RESIZE_BLOCK] = np.clip(np.rint(x), 0, 255)
    return out


def sample_bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Sample ``image`` (H, W) or (H, W, C) at float pixel coordinates (pixel centres at integers).

    Coordinates outside the image take the nearest edge pixel. Returns float32 of shape
    ``xs.shape`` (+ (C,)).
    """
    h, w = image.shape[:2]
    img = image.astype(np.float32, copy=False)
    xs = np.clip(xs, 0.0, w - 1.0)
    ys = np.clip(ys, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(xs).astype(np.int64), w - 2) if w > 1 else np.zeros(xs.shape, np.int64)
    y0 = np.minimum(np.floor(ys).astype(np.int64), h - 2) if h > 1 else np.zeros(ys.shape, np.int64)
    fx = (xs - x0).astype(np.float32)
    fy = (ys - y0).astype(np.float32)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


# --------------------------------------------------------------------------- features


def _pool(x: np.ndarray, grid: int) -> np.ndarray:
    """Average-pool (n, H, W, ...) to (n, grid, grid, ...); H and W must divide by grid."""
    n, h, w = x.shape[:3]
    return x.reshape(n, grid, h // grid, grid, w // grid, *x.shape[3:]).mean(axis=(2, 4))


class VisualFeatureStream:
    """Stateful visual features over consecutive chunks of one video (keeps the previous frame)."""

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None  # last frame, float32 (64, 64, 3) in [0, 1]
        self._prev_energy = 0.0

    def reset(self) -> None:
        self._prev, self._prev_energy = None, 0.0

    def push(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames uint8 (n, 64, 64, 3) -> (video (n, 208), sync (n, 18)) float32."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != (VIS_SIZE, VIS_SIZE, 3):
            raise ValueError(f"expected frames (n, {VIS_SIZE}, {VIS_SIZE}, 3), got {frames.shape}")
        n = frames.shape[0]
        if n == 0:
            return np.zeros((0, VIDEO_DIM), np.float32), np.zeros((0, SYNC_DIM), np.float32)
        x = frames.astype(np.float32) / 255.0
        appearance = (_pool(x, APPEARANCE_GRID).reshape(n, -1) - 0.5) / 0.25

        prev = np.concatenate([x[:1] if self._prev is None else self._prev[None], x[:-1]])
        diff = np.abs(x - prev).mean(axis=3)  # (n, 64, 64); zero for a stream's first frame
        cells = _pool(diff, MOTION_GRID).reshape(n, -1)
        motion = np.log1p(MOTION_GAIN * cells) / _MOTION_NORM
        energy = np.log1p(MOTION_GAIN * cells.mean(axis=1)) / _MOTION_NORM
        prev_energy = np.concatenate([[self._prev_energy], energy[:-1]])
        onset = np.maximum(energy - prev_energy, 0.0)

        self._prev = x[-1]
        self._prev_energy = float(energy[-1])
        video = np.concatenate([appearance, motion], axis=1).astype(np.float32)
        sync = np.concatenate([motion, energy[:, None], onset[:, None]], axis=1).astype(np.float32)
        return video, sync


def visual_features(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features of a whole clip: frames uint8 (n, H, W, 3) -> (video (n, 208), sync (n, 18))."""
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[1:3] != (VIS_SIZE, VIS_SIZE):
        frames = resize_frames(frames)
    return VisualFeatureStream().push(frames)


# --------------------------------------------------------------------------- where something moves

STILL_MOTION = 0.2  # a cell's compressed motion above this is visible movement: held-out stills (sensor noise,
# flicker, drift) peak at 0.12, every held-out sound clip reaches 0.41 or more
SOUND_LEAD_S, SOUND_TAIL_S = 0.2, 1.0  # sound may start a little before motion shows, and rings on after it stops


def motion_spans(
    sync: np.ndarray, fps: float = FEATURE_FPS, threshold: float = STILL_MOTION,
    lead_s: float = SOUND_LEAD_S, tail_s: float = SOUND_TAIL_S,
) -> list[tuple[float, float]]:  # fmt: skip
    """Seconds where anything in the picture moves: ``sync`` (n, SYNC_DIM) features -> sorted (start, end) spans.

    A frame moves when any cell of its motion grid exceeds ``threshold``; each moving frame opens
    ``[t - lead_s, t + 1/fps + tail_s)``, and overlapping openings merge. A still or black clip gives [].
    """
    from vssflow_cli.text import merge_spans

    sync = np.asarray(sync, np.float32)
    if sync.ndim != 2 or sync.shape[1] < MOTION_GRID * MOTION_GRID or len(sync) == 0:
        return []
    moving = np.flatnonzero(sync[:, : MOTION_GRID * MOTION_GRID].max(axis=1) > threshold)
    return merge_spans((max(0.0, i / fps - lead_s), (i + 1) / fps + tail_s) for i in moving)
