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
- inference (:func:`dub_prior`): no DTW. Each reading is stretched uniformly onto its span (:func:`time_stretch`,
  WSOLA on the waveform, so the pitch stays and consonants stay whole); the span is the cue, or the stretch of
  face-on mouth motion the script was placed on, and a reading much shorter than a long span starts where the
  mouth first opens (:func:`speech_window`). Warping syllables onto mouth openings by DTW was measured to cost
  intelligibility for little sync (see weights/vssflow-tiny/MODEL.md).
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


def align_to_speech(teacher_mel: np.ndarray, target_mel: np.ndarray) -> np.ndarray:
    """Training: the teacher's log-mel warped onto a recording of the same words (both (F, n_mels))."""
    path = dtw_path(mfcc(teacher_mel), mfcc(target_mel))
    return warp_by_path(teacher_mel, path, len(target_mel))


WSOLA_FRAME = 512  # 32 ms analysis frames at 16 kHz: a pitch period or more of any voice, shorter than a phone
WSOLA_TOLERANCE = 128  # samples each side a frame may move to join its predecessor in phase


def time_stretch(
    wave: np.ndarray, length: int, frame: int = WSOLA_FRAME, tolerance: int = WSOLA_TOLERANCE
) -> np.ndarray:
    """``wave`` (N,) played in ``length`` samples at its own pitch, by WSOLA: (N,) -> (length,) float32.

    Hann frames are laid every ``frame // 2`` output samples; each is read near the uniformly mapped input
    position, shifted by up to ``tolerance`` samples to the offset that best continues the previous frame
    (cross-correlation), so periods join in phase and consonants stay whole instead of being interpolated.
    """
    x = np.asarray(wave, np.float32)
    if length <= 0 or x.size == 0:
        return np.zeros(max(length, 0), np.float32)
    hop = frame // 2
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)).astype(np.float32)
    margin = frame + tolerance
    xp = np.pad(x, (margin, margin + frame))
    rate = (len(x) - 1) / max(length - 1, 1)
    out = np.zeros(length + 2 * frame, np.float32)
    norm = np.zeros_like(out)
    last = len(x) - frame // 2  # a frame centred on the last sample; the padding holds any frame up to there
    prev = None
    for k in range(length // hop + 2):
        t = k * hop  # output position of this frame's centre
        begin = min(int(round(t * rate)) - frame // 2, last)
        if prev is not None:
            natural = xp[margin + prev + hop : margin + prev + hop + frame]
            lo = max(begin - tolerance, -margin)
            region = xp[margin + lo : margin + lo + frame + 2 * tolerance]
            if len(natural) == frame and len(region) >= frame and np.any(natural):
                begin = min(lo + int(np.argmax(np.correlate(region, natural * win, mode="valid"))), last)
        at = t - frame // 2 + frame  # output index (out is offset by one frame)
        out[at : at + frame] += xp[margin + begin : margin + begin + frame] * win
        norm[at : at + frame] += win
        prev = begin
    body = slice(frame, frame + length)
    return (out[body] / np.maximum(norm[body], 1e-3)).astype(np.float32)


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

    ``placed``: (start_s, end_s, text) segments; ``readings``: the teacher's reading of each, a 16 kHz wave (N,)
    or its log-mel (F, n_mels) at the mel frame rate (:meth:`vssflow_cli.teacher.KokoroTeacher.speak_logmel`); ``lip``:
    (n, lip_dim) lip features at ``fps`` or None; ``n_frames``: latent frames of the clip. Returns the track
    ((n_frames * mel_per_latent, n_mels) float32) and the (start_s, end_s) of each reading as placed.
    """
    k = cfg.mel_per_latent
    n_mel = n_frames * k
    pieces, where = [], []
    for (start, end, _text), reading in zip(placed, readings):
        is_mel = np.ndim(reading) == 2
        natural = len(reading) / (cfg.mel_fps if is_mel else cfg.sample_rate)
        if natural * cfg.mel_fps < 4:
            continue
        s0, s1 = speech_window(start, end, natural, lip, fps)
        a, b = int(round(s0 * cfg.mel_fps)), int(round(s1 * cfg.mel_fps))
        if b - a < 4:
            continue
        # a uniform stretch: a warp of the mel by the lips' loudness (DTW) measured twice the Whisper WER of a plain
        # stretch (0.23 vs 0.10, 25 held-out prompts) for lip corr 0.74 vs 0.72. A wave is stretched by WSOLA before
        # its log-mel; a log-mel by resampling its frames (a mel frame carries no phase to keep in step).
        if is_mel:
            warped = resample_at(reading, np.linspace(0.0, len(reading) - 1.0, b - a))
        else:
            warped = teacher_logmel(time_stretch(reading, (b - a) * cfg.hop), cfg)[: b - a]
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
