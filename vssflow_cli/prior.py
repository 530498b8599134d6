"""The acoustic prior of dubbing: the teacher's log-mel, warped in time onto where the speech must be.

VSSFlow concatenates deterministic, time-aligned conditions to the noisy latent; the prior is one of them. It is a
log-mel track at the mel frame rate (``AudioConfig.mel_fps``), encoded by the bundle's latent codec to
``(T, latent_channels)`` like the audio itself, holding

- the teacher's reading of each script segment, warped onto the segment's span, and
- the log-mel of silence everywhere else, so "no speech here" is said explicitly (the DiT is trained that way);

an all-zero prior means "no prior" (the unconditional branch of classifier-free guidance, and speech clips of
languages the teacher does not read).

Warps are dynamic time warping (:func:`dtw_path`) between two feature sequences:

- training (:func:`align_to_speech`): teacher MFCCs against the real recording's, so the prior follows the target
  syllable by syllable;
- inference (:func:`warp_to_guide`): the teacher's loudness envelope against the mouth aperture of the span, so the
  teacher's syllables land on the mouth openings; with no face, a uniform stretch over the span.
"""

from __future__ import annotations

import math

import numpy as np

from vssflow_cli.audio import LOG_FLOOR, log_mel
from vssflow_cli.config import AudioConfig

SILENCE_LOGMEL = float(math.log(LOG_FLOOR))
BAND = 0.25  # DTW band half-width as a share of the longer sequence (plus a few frames)


def mfcc(logmel: np.ndarray, n: int = 20) -> np.ndarray:
    """Mean/variance-normalised cepstra 1..n of a log-mel: (F, n_mels) -> (F, n) float32."""
    from scipy.fft import dct

    c = dct(np.asarray(logmel, np.float64), type=2, norm="ortho", axis=1)[:, 1 : n + 1]
    c = (c - c.mean(0)) / (c.std(0) + 1e-6)
    return c.astype(np.float32)


def dtw_path(a: np.ndarray, b: np.ndarray, band: float = BAND) -> np.ndarray:
    """Monotonic alignment of ``a`` (N, D) to ``b`` (M, D) by Euclidean DTW inside a band around the diagonal.

    Returns the path as an (L, 2) int array of (i, j) pairs from (0, 0) to (N - 1, M - 1). Steps are (1, 0),
    (0, 1) and (1, 1); the band keeps |i / N - j / M| within ``band`` (plus 3 frames) so no part of one sequence is
    squeezed to a point.
    """
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise ValueError("dtw_path needs two non-empty sequences")
    cost = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))
    ii = np.arange(n)[:, None] / max(n - 1, 1)
    jj = np.arange(m)[None, :] / max(m - 1, 1)
    outside = np.abs(ii - jj) > band + 3.0 / max(n, m)
    cost[outside] = np.inf
    acc = np.full((n, m), np.inf)
    for i in range(n):
        inside = np.flatnonzero(~outside[i])
        if inside.size == 0:
            continue
        lo, hi = int(inside[0]), int(inside[-1]) + 1  # the band is one contiguous run per row
        c = cost[i, lo:hi]
        if i == 0:
            best = np.full(hi - lo, np.inf)
            if lo == 0:
                best[0] = c[0]
        else:
            prev = acc[i - 1]
            diag = prev[lo - 1 : hi - 1] if lo > 0 else np.concatenate([[np.inf], prev[: hi - 1]])
            best = np.minimum(diag, prev[lo:hi]) + c
        # horizontal moves: acc[i, j] = min(best[j], acc[i, j - 1] + cost[i, j]), one min-plus scan
        csum = np.cumsum(c)
        acc[i, lo:hi] = np.minimum.accumulate(best - csum) + csum
    if not np.isfinite(acc[-1, -1]):
        raise ValueError("no DTW path inside the band")
    path = [(n - 1, m - 1)]
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            k = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
            i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
        path.append((i, j))
    return np.asarray(path[::-1], np.int64)


def warp_by_path(src: np.ndarray, path: np.ndarray, length: int) -> np.ndarray:
    """``src`` (N, D) resampled onto ``length`` target frames along a DTW path of (src, target) index pairs.

    Each target frame takes the mean source position aligned to it; frames between are linearly interpolated.
    """
    return resample_at(np.asarray(src, np.float32), mean_positions(path, length))


def mean_positions(path: np.ndarray, length: int) -> np.ndarray:
    """(length,) float: for each target index of a DTW path of (source, target) pairs, its mean source index."""
    pos = np.zeros(length)
    cnt = np.zeros(length)
    np.add.at(pos, path[:, 1], path[:, 0])
    np.add.at(cnt, path[:, 1], 1)
    return pos / np.maximum(cnt, 1)


def resample_at(src: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Rows of ``src`` (N, D) at fractional positions ``pos`` (L,) by linear interpolation -> (L, D)."""
    pos = np.clip(np.asarray(pos, np.float64), 0, len(src) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(src) - 1)
    f = (pos - lo)[:, None].astype(np.float32)
    return (src[lo] * (1 - f) + src[hi] * f).astype(np.float32)


def stretch(src: np.ndarray, length: int) -> np.ndarray:
    """Uniform time stretch of ``src`` (N, D) to ``length`` frames."""
    if length <= 0:
        return np.zeros((0, src.shape[1]), np.float32)
    return resample_at(src, np.linspace(0, len(src) - 1, length))


def align_to_speech(teacher_mel: np.ndarray, target_mel: np.ndarray) -> np.ndarray:
    """Training: the teacher's log-mel warped onto a recording of the same words (both (F, n_mels))."""
    path = dtw_path(mfcc(teacher_mel), mfcc(target_mel))
    return warp_by_path(teacher_mel, path, len(target_mel))


def envelope(logmel: np.ndarray, frames: int) -> np.ndarray:
    """Loudness curve of a log-mel (F, n_mels) averaged onto ``frames`` equal pieces: (frames,)."""
    e = np.log(np.exp(np.asarray(logmel, np.float64)).sum(1) + 1e-6)
    edges = np.linspace(0, len(e), frames + 1)
    return np.array([e[int(a) : max(int(a) + 1, int(b))].mean() for a, b in zip(edges[:-1], edges[1:])])


def _znorm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x - x.mean()) / (x.std() + 1e-6)


SMOOTH_GUIDE_FRAMES = 5.0  # Gaussian sigma (guide frames) of the lip warp: shifts syllables, never stutters them
MIN_RATE, MAX_RATE = 0.75, 1.35  # the warped reading plays at most this much slower / faster than the plain stretch


def _gentle(pos: np.ndarray, sigma: float) -> np.ndarray:
    """A warp curve (source position per target frame) smoothed and held to rates in [MIN_RATE, MAX_RATE]."""
    n = len(pos)
    if sigma > 0 and n > 2:
        k = np.arange(-int(3 * sigma), int(3 * sigma) + 1)
        g = np.exp(-0.5 * (k / sigma) ** 2)
        padded = np.pad(pos, len(k) // 2, mode="edge")
        pos = np.convolve(padded, g / g.sum(), mode="valid")
    step = np.clip(np.diff(pos, prepend=pos[0]), MIN_RATE, MAX_RATE)
    step[0] = 0.0
    out = pos[0] + np.cumsum(step)
    return out * ((n - 1) / out[-1]) if out[-1] > 0 else out  # end where the reading ends


def warp_to_guide(teacher_mel: np.ndarray, guide: np.ndarray | None, length: int, mel_per_guide: int) -> np.ndarray:
    """Inference: the teacher's log-mel onto a span of ``length`` mel frames.

    ``guide`` is the mouth aperture over the span at the video feature rate ((length / mel_per_guide,) values, or
    None): the teacher's loudness envelope is aligned to it by DTW so syllables land on openings. With no guide
    (or a flat one: no visible mouth motion) the teacher is stretched uniformly.
    """
    if length <= 0 or len(teacher_mel) == 0:
        return np.full((max(length, 0), teacher_mel.shape[1]), SILENCE_LOGMEL, np.float32)
    if guide is None or len(guide) < 4 or float(np.std(guide)) < 1e-4:
        return stretch(teacher_mel, length)
    g = len(guide)
    # the teacher at the guide's rate, uniformly stretched first so the band is relative to the span
    base = stretch(teacher_mel, g * mel_per_guide)
    env = envelope(base, g)
    path = dtw_path(_znorm(env)[:, None], _znorm(guide)[:, None], band=0.15)
    pos = _gentle(mean_positions(path, g), SMOOTH_GUIDE_FRAMES)
    # guide frame k covers mel frames [k * r, (k + 1) * r) of the span; map them through the warped positions
    fine = np.interp(np.arange(g * mel_per_guide) / mel_per_guide - 0.5 + 0.5 / mel_per_guide,
                     np.arange(g), pos) * mel_per_guide + (mel_per_guide - 1) / 2
    warped = resample_at(base, fine)
    return stretch(warped, length) if len(warped) != length else warped


def prior_track(n_mel: int, placed: list[tuple[int, np.ndarray]], n_mels: int) -> np.ndarray:
    """A full prior log-mel (n_mel, n_mels): silence, with each (start_frame, logmel) piece written in place."""
    track = np.full((n_mel, n_mels), SILENCE_LOGMEL, np.float32)
    for start, mel in placed:
        lo, hi = max(0, start), min(n_mel, start + len(mel))
        if hi > lo:
            track[lo:hi] = mel[lo - start : hi - start]
    return track


def teacher_logmel(wave: np.ndarray, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Log-mel of a teacher reading at 16 kHz (the codec's own analysis)."""
    return log_mel(np.asarray(wave, np.float32), cfg)


# --------------------------------------------------------------------------- the prior of a dub


MAX_STRETCH = 1.5  # a reading is slowed at most this much to fill a long span; the rest stays silent
MAX_WORDS_PER_S = 6.0  # faster than this cannot be spoken intelligibly: warn


def speech_window(
    start: float, end: float, natural_s: float, lip: np.ndarray | None, fps: float
) -> tuple[float, float]:
    """Where in the span ``[start, end)`` (s) a reading of ``natural_s`` seconds goes.

    The reading keeps the span when it roughly fills it. In a longer span it is slowed at most
    :data:`MAX_STRETCH` times and starts where the mouth first opens inside the span (``lip`` features at ``fps``,
    None = no face: at the span start), never running past the span's end.
    """
    span = end - start
    want = min(span, natural_s * MAX_STRETCH)
    if want >= span - 1e-6:
        return start, end
    s0 = start
    if lip is not None and len(lip):
        a, b = int(start * fps), min(len(lip), int(np.ceil(end * fps)))
        seg = lip[a:b]
        if len(seg):
            ap = np.where(seg[:, 0] > 0.5, seg[:, 1], 0.0)
            opened = np.flatnonzero(ap > max(0.15, 0.3 * float(ap.max(initial=0.0))))
            if opened.size:
                s0 = start + max(0.0, opened[0] / fps - 0.08)
    s0 = min(s0, end - want)
    return s0, s0 + want


def dub_prior(
    placed: list[tuple[float, float, str]],
    readings: list[np.ndarray],
    lip: np.ndarray | None,
    n_frames: int,
    cfg: AudioConfig,
    fps: float,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The prior log-mel of a dub and the spans where speech was put.

    ``placed``: (start_s, end_s, text) segments; ``readings``: the teacher's 16 kHz reading of each; ``lip``:
    (n, lip_dim) lip features at ``fps`` or None; ``n_frames``: latent frames of the clip. Returns the track
    ((n_frames * mel_per_latent, n_mels) float32) and the (start_s, end_s) of each reading as placed.
    """
    k = cfg.mel_per_latent
    n_mel = n_frames * k
    pieces, where = [], []
    for (start, end, _text), reading in zip(placed, readings):
        if len(reading) < cfg.hop * 4:
            continue
        mel = teacher_logmel(reading, cfg)
        s0, s1 = speech_window(start, end, len(reading) / cfg.sample_rate, lip, fps)
        a, b = int(round(s0 * cfg.mel_fps)), int(round(s1 * cfg.mel_fps))
        if b - a < 4:
            continue
        guide = None
        if lip is not None and len(lip):
            la, lb = int(round(s0 * fps)), int(round(s1 * fps))
            seg = lip[la:lb]
            if len(seg) >= 4 and float(np.mean(seg[:, 0] > 0.5)) > 0.8:
                guide = seg[:, 1]
        per_guide = int(round(cfg.mel_fps / fps))
        if guide is not None:
            warped = warp_to_guide(mel, guide, len(guide) * per_guide, per_guide)
            warped = stretch(warped, b - a)
        else:
            warped = stretch(mel, b - a)
        pieces.append((a, warped))
        where.append((a / cfg.mel_fps, b / cfg.mel_fps))
    return prior_track(n_mel, pieces, cfg.n_mels), where


def speaking_rate_warnings(placed: list[tuple[float, float, str]]) -> list[str]:
    """One line per segment whose words cannot fit its span (more than :data:`MAX_WORDS_PER_S` words/s)."""
    out = []
    for s, e, text in placed:
        words = len(text.split())
        rate = words / max(e - s, 1e-3)
        if rate > MAX_WORDS_PER_S:
            out.append(f"script line at {s:.1f}-{e:.1f} s has {words} words in {e - s:.1f} s ({rate:.1f} words/s, "
                       f"more than {MAX_WORDS_PER_S:.0f}); it will sound rushed: shorten it or widen the cue")
    return out


class SpanGate:
    """Multiplies a generated track by a mask that is 1 inside spans (widened by ``pad_s``) and 0 elsewhere,
    with ``fade_s`` raised-cosine ramps, chunk by chunk: ``gate(samples, offset) -> samples``."""

    def __init__(self, spans: list[tuple[float, float]], sr: int, pad_s: float = 0.1, fade_s: float = 0.05) -> None:
        self.sr, self.fade = sr, max(1, int(fade_s * sr))
        self.spans = [(max(0, int((s - pad_s) * sr)), int((e + pad_s) * sr)) for s, e in spans]

    def __call__(self, samples: np.ndarray, offset: int) -> np.ndarray:
        n = len(samples)
        mask = np.zeros(n, np.float32)
        pos = np.arange(offset, offset + n)
        for a, b in self.spans:
            if b <= offset or a >= offset + n:
                continue
            up = np.clip((pos - a) / self.fade, 0, 1)
            down = np.clip((b - pos) / self.fade, 0, 1)
            ramp = np.minimum(up, down)
            mask = np.maximum(mask, (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32))
        return samples * mask
