"""Levels of the generated track: loudness (ITU-R BS.1770-4 / EBU R128), true peak, and the gain policy.

Measurement follows BS.1770-4: K-weighting (a high shelf and a high pass, designed for any sample rate
with the bilinear forms that give the standard's 48 kHz coefficients; applied as an FFT convolution with
their impulse response, so numpy and scipy.fft suffice), mean square over 400 ms blocks
every 100 ms, channel weights (1.0 front, 1.41 surround, LFE left out), an absolute gate at -70 LUFS
and a relative gate 10 LU below the loudness of the blocks that pass it. True peak is the largest
magnitude of the signal oversampled to at least 192 kHz (4x at 48 kHz as in Annex 2; 12x at the
model's 16 kHz). Both run chunk by chunk, so a track of any length is measured in bounded memory.

Policy (:func:`plan_levels`), applied once to the whole generated track, so its dynamics are kept:

* the track is brought to a target integrated loudness: ``TARGET_LUFS`` for its task (foley -23,
  dub -20), or ``--loudness``; with ``--mix add`` the target is the original's loudness plus an
  offset (``ADD_OFFSET_LU`` = -6 LU: under the original), or the absolute target if the original is
  silent (every block below the absolute gate);
* ``--gain-db`` moves the track from that reference (default 0, or -6 for ``add``);
* the gain is then lowered, if needed, so the true peak stays at or below ``CEILING_DBTP`` (-1 dBTP);
* a near-silent track (below ``SILENCE_LUFS``, or with every block gated) gets no gain at all: silence
  stays silence instead of turning a noise floor into a bed at the target.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from vssflow_cli.media import MediaInfo

# Foley: EBU R128's programme loudness, which leaves the 22 dB of peak headroom impacts need (the embedded
# model's footsteps peak 21 dB over their loudness). Dub: the quiet end of AES TD1004's -16..-20 LUFS for online
# speech, the loudest a gain alone reaches for unprocessed speech (the model's peaks 18 dB over its loudness, so
# at -16 the -1 dBTP ceiling would hold it at about -19 anyway; louder needs a limiter, which vssflow has not).
TARGET_LUFS = {"foley": -23.0, "dub": -20.0}
ADD_OFFSET_LU = -6.0  # --mix add: generated track this far below the original's loudness
CEILING_DBTP = -1.0  # EBU R128 maximum true peak
# Quieter generated tracks are left as they are (no gain): 27 LU under the foley target, and 7-12 LU over a
# track at issue 12's silence criterion (RMS -60 dBFS: white noise at 16 kHz reads -57.2 LUFS, pink -61.9).
SILENCE_LUFS = -50.0
LOUDNESS_RANGE = (-60.0, -5.0)  # accepted --loudness values
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BLOCK_SECONDS, STEP_SECONDS = 0.4, 0.1
_TP_RATE = 192000  # true peak: oversample to at least this rate
_TP_TAPS_PER_PHASE = 12
_CHUNK = 1 << 16  # samples per read

_SURROUND = {"SL", "SR", "BL", "BR", "BC", "SDL", "SDR", "TBL", "TBR", "TBC"}  # weight 1.41 (+1.5 dB)
_LFE = {"LFE", "LFE2"}  # excluded
_KNOWN = _SURROUND | _LFE | {"FL", "FR", "FC", "FLC", "FRC", "TC", "TFL", "TFC", "TFR", "WL", "WR"}


def k_weighting_sos(sample_rate: float) -> np.ndarray:
    """K-weighting as two biquads ``(2, 6)`` (b0 b1 b2 a0 a1 a2 rows) for ``sample_rate``; at 48 kHz the BS.1770-4
    table."""
    import numpy as np

    # Stage 1, high shelf (+4 dB above ~1.7 kHz): the head's acoustic effect.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]  # fmt: skip
    # Stage 2, high pass (RLB weighting, ~38 Hz).
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def channel_weight(name: str) -> float:
    """BS.1770-4 weight of a channel by its ffmpeg name: 0 for LFE, 1.41 for surrounds, else 1."""
    if name in _LFE:
        return 0.0
    return 1.41 if name in _SURROUND else 1.0


def _amplitude_db(a: float) -> float:
    return 20 * math.log10(a) if a > 0 else -math.inf


def k_weighting_ir(sample_rate: float) -> np.ndarray:
    """Impulse response of the K-weighting, cut where it has decayed below 1e-12 of its peak: ``(L,)``.

    Sampled from the biquads' frequency response over 0.5 s or more (the slowest pole, the 38 Hz high
    pass, decays by more than e^-100 in that time), so the time aliasing is far below float64 precision.
    Filtering by FFT convolution with it keeps scipy.signal (up to a second or two to import) off the run.
    """
    import numpy as np

    n = 1 << max(12, math.ceil(math.log2(0.5 * sample_rate)))
    z = np.exp(-1j * np.pi * np.arange(n // 2 + 1) / (n // 2))  # z^-1 on the rfft grid
    h = np.ones_like(z)
    for b0, b1, b2, _, a1, a2 in k_weighting_sos(sample_rate):
        h *= (b0 + b1 * z + b2 * z * z) / (1 + a1 * z + a2 * z * z)
    ir = np.fft.irfft(h, n)
    keep = np.nonzero(np.abs(ir) > 1e-12 * np.abs(ir).max())[0][-1] + 1
    return ir[:keep]


class _Convolver:
    """Streaming FIR filtering ``(n, channels)`` by FFT, overlap-add: the same output as one long convolution."""

    def __init__(self, h: np.ndarray, channels: int) -> None:
        import numpy as np

        self.h = h
        self.tail = np.zeros((len(h) - 1, channels))  # what earlier chunks still add to the next samples
        self._spectra: dict[int, np.ndarray] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import numpy as np
        from scipy import fft  # float32 transforms: ~3x numpy's float64 ones, ample for block energies

        n = len(x)
        size = 1 << math.ceil(math.log2(n + len(self.h) - 1))
        if size not in self._spectra:
            self._spectra[size] = fft.rfft(self.h, size).astype(np.complex64)[:, None]
        spectrum = fft.rfft(x.astype(np.float32), size, axis=0) * self._spectra[size]
        y = fft.irfft(spectrum, size, axis=0)[: n + len(self.h) - 1].astype(np.float64)
        y[: len(self.tail)] += self.tail
        self.tail = y[n:].copy()
        return y[:n]


class TruePeakMeter:
    """Largest magnitude of the signal oversampled ``ceil(192 kHz / rate)`` times, chunk by chunk.

    Interpolation is polyphase with a Kaiser-windowed sinc (12 taps a phase) whose zeros fall on the
    input samples: phase 0 is the input itself, so the true peak is never below the sample peak.
    """

    def __init__(self, sample_rate: float, channels: int = 1) -> None:
        import numpy as np

        self.up = up = max(1, math.ceil(_TP_RATE / sample_rate))
        self.peak = 0.0
        taps = up * _TP_TAPS_PER_PHASE + 1  # centred on a sample: index up * P / 2
        h = np.sinc((np.arange(taps) - (taps - 1) / 2) / up) * np.kaiser(taps, 8.0)
        h = np.concatenate([h, np.zeros(up * (_TP_TAPS_PER_PHASE + 1) - taps)])
        self.phases = h.reshape(-1, up).T[:, ::-1]  # (up, P + 1): phase p = h[p::up], reversed for correlate
        self.context = np.zeros((_TP_TAPS_PER_PHASE, channels))  # silence before the start

    def push(self, x: np.ndarray) -> None:
        """Add ``x`` (n, channels)."""
        import numpy as np

        if len(x) == 0:
            return
        if self.up == 1:
            self.peak = max(self.peak, float(np.abs(x).max()))
            return
        buf = np.concatenate([self.context, x])
        for c in range(buf.shape[1]):
            for taps in self.phases:  # outputs with every tap on a sample: one per sample of x
                self.peak = max(self.peak, float(np.abs(np.correlate(buf[:, c], taps, "valid")).max()))
        self.context = buf[len(buf) - len(self.context) :]

    def finish(self) -> float:
        """The true peak as a linear amplitude, the signal taken as followed by silence."""
        import numpy as np

        if self.up > 1:
            self.push(np.zeros_like(self.context))
        return self.peak


class LoudnessMeter:
    """BS.1770-4 integrated loudness, fed chunk by chunk: ``push((n, channels))``, then :meth:`result`.

    Memory is one float per channel per 100 ms, whatever the length.
    """

    def __init__(self, sample_rate: float, weights: tuple[float, ...] = (1.0,), *, true_peak: bool = False) -> None:
        import numpy as np

        self.rate = float(sample_rate)
        self.weights = np.asarray(weights, np.float64)
        n = len(self.weights)
        self.k_weighting = _Convolver(k_weighting_ir(self.rate), n)
        self.step = max(1, round(STEP_SECONDS * self.rate))  # samples per 100 ms segment
        self.per_block = round(BLOCK_SECONDS / STEP_SECONDS)  # 4 segments per 400 ms block
        self.segments: list[np.ndarray] = []  # (k, channels) sums of squares of K-weighted samples
        self.pending = np.zeros((0, n))
        self.sample_peak = 0.0
        self.tp = TruePeakMeter(self.rate, n) if true_peak else None

    def push(self, x: np.ndarray) -> None:
        """Add samples ``(n,)`` (mono) or ``(n, channels)``."""
        import numpy as np

        x = np.asarray(x, np.float64)
        x = x.reshape(len(x), -1)
        if x.shape[1] != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} channels, got {x.shape[1]}")
        for i in range(0, len(x), _CHUNK):  # bounded temporaries, whatever the caller passes
            self._push(x[i : i + _CHUNK])

    def _push(self, x: np.ndarray) -> None:
        import numpy as np

        self.sample_peak = max(self.sample_peak, float(np.abs(x).max()))
        if self.tp is not None:
            self.tp.push(x)
        y = self.k_weighting(x)
        sq = np.concatenate([self.pending, y * y])
        k = len(sq) // self.step
        if k:
            self.segments.append(sq[: k * self.step].reshape(k, self.step, -1).sum(axis=1))
        self.pending = sq[k * self.step :]

    def block_powers(self) -> np.ndarray:
        """Weighted mean square of every complete 400 ms block (hop 100 ms): ``(n_blocks,)``."""
        import numpy as np

        if not self.segments:
            return np.zeros(0)
        seg = np.concatenate(self.segments) @ self.weights  # (k,) weighted sums per 100 ms
        if len(seg) < self.per_block:
            return np.zeros(0)
        sums = np.convolve(seg, np.ones(self.per_block), mode="valid")
        return sums / (self.per_block * self.step)

    def integrated(self) -> float:
        """Gated integrated loudness in LUFS; ``-inf`` if no block passes the gates (silence, < 400 ms)."""
        import numpy as np

        z = self.block_powers()
        with np.errstate(divide="ignore"):
            lj = -0.691 + 10 * np.log10(z)
        above = z[lj > ABSOLUTE_GATE_LUFS]
        if not len(above):
            return -math.inf
        relative = -0.691 + 10 * math.log10(float(above.mean())) + RELATIVE_GATE_LU
        gated = z[(lj > ABSOLUTE_GATE_LUFS) & (lj > relative)]
        return -0.691 + 10 * math.log10(float(gated.mean())) if len(gated) else -math.inf

    def result(self) -> Measurement:
        """Integrated loudness and peaks so far (the true peak is the sample peak unless ``true_peak``)."""
        tp = self.tp.finish() if self.tp is not None else self.sample_peak
        return Measurement(self.integrated(), _amplitude_db(tp), _amplitude_db(self.sample_peak))


@dataclass(frozen=True)
class Measurement:
    """Integrated loudness (LUFS), true peak (dBTP) and sample peak (dBFS); ``-inf`` for silence."""

    lufs: float
    true_peak_db: float
    sample_peak_db: float

    @property
    def audible(self) -> bool:
        return math.isfinite(self.lufs)


def measure(x: np.ndarray, sample_rate: float, weights: tuple[float, ...] | None = None) -> Measurement:
    """Loudness and true peak of samples ``(n,)`` or ``(n, channels)`` (weights default to 1 each)."""
    import numpy as np

    x = np.asarray(x, np.float64)
    n = 1 if x.ndim == 1 else x.shape[1]
    meter = LoudnessMeter(sample_rate, weights or (1.0,) * n, true_peak=True)
    meter.push(x)
    return meter.result()


def measure_file(path: str | os.PathLike[str]) -> Measurement:
    """Loudness and true peak of a sound file soundfile reads (the pipeline's mono temp track)."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        meter = LoudnessMeter(f.samplerate, (1.0,) * f.channels, true_peak=True)
        for block in f.blocks(_CHUNK, dtype="float64", always_2d=True):
            meter.push(block)
    return meter.result()


# --------------------------------------------------------------------------- the original's audio


@dataclass(frozen=True)
class Layout:
    """A channel layout: ``spec`` for ffmpeg filters (``FL+FR+FC+LFE+BL+BR``), channel names in order."""

    spec: str
    names: tuple[str, ...]

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(channel_weight(n) for n in self.names)


def layout_of(channels: int, names: tuple[str, ...] = ()) -> Layout:
    """The layout named by ``names``, or ffmpeg's default for ``channels`` when the names are not standard."""
    import av

    if len(names) != channels or not set(names) <= _KNOWN:
        try:
            names = tuple(c.name for c in av.AudioLayout(f"{channels}c").channels)
        except (ValueError, TypeError):
            names = ()
        if len(names) != channels or not set(names) <= _KNOWN:  # no default (> 8 channels): plain numbers
            return Layout(f"{channels}c", tuple(f"c{i}" for i in range(channels)))
    return Layout("+".join(names), names)


def audio_layout(path: str | os.PathLike[str]) -> Layout:
    """Channel layout of the first audio stream of ``path`` (mono if it cannot be read)."""
    import av

    with open(path, "rb") as fh, av.open(fh, mode="r", metadata_errors="ignore") as c:
        audios = [s for s in c.streams.audio if s.codec_context is not None]
        if not audios:
            return layout_of(1)
        cc = audios[0].codec_context
        return layout_of(int(cc.channels), tuple(ch.name for ch in cc.layout.channels))


def measure_media(path: str | os.PathLike[str], layout: Layout, sample_rate: int = 48000) -> Measurement:
    """Loudness of the first audio stream of a media file, all its channels weighted, decoded by ffmpeg."""
    import numpy as np

    from vssflow_cli.errors import InputError
    from vssflow_cli.media import _FramePipe, ffmpeg_argv, input_url

    n = len(layout.names)
    argv = ffmpeg_argv(
        "-i", input_url(path), "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-af", f"aresample={sample_rate},aformat=sample_fmts=flt:channel_layouts={layout.spec}",
        "-f", "f32le", "pipe:1",
    )  # fmt: skip
    meter = LoudnessMeter(sample_rate, layout.weights)
    pipe = _FramePipe(argv, 4 * n)
    try:
        while True:
            buf = pipe.read(_CHUNK)
            k = len(buf) // (4 * n)
            meter.push(np.frombuffer(buf, np.float32, k * n).reshape(k, n))
            if len(buf) < _CHUNK * 4 * n:
                break
        rc, msg = pipe.finish()
        if rc != 0:
            raise InputError(f"{path}: cannot decode audio to measure its loudness: {msg}; check or re-encode it")
    finally:
        pipe.close()
    return meter.result()


def upmix_filter(layout: Layout, *, speech: bool) -> str:
    """ffmpeg ``pan`` placing a mono track in ``layout``: speech in the centre, else front left + right.

    Falls back to front left/right (speech) or the centre (effects) when the layout lacks them; the
    gains keep the power, so the mono track's loudness is its loudness in the mix.
    """
    names = layout.names
    if speech and "FC" in names:
        into = ["FC"]
    elif "FL" in names and "FR" in names:
        into = ["FL", "FR"]
    elif "FC" in names:
        into = ["FC"]
    else:
        into = [names[0]]
    g = 1 / math.sqrt(len(into))
    return f"pan={layout.spec}|" + "|".join(f"{c}={g:.8f}*c0" for c in into)


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Levels:
    """What the policy did to the generated track (the gain applied once to the whole track)."""

    reference: str  # "target" | "original" (--mix add) | "silence" (near-silent track, left as is)
    target_lufs: float | None  # None for "silence"
    measured_lufs: float  # the generated track as the model made it
    true_peak_db: float  # ... and its true peak
    gain_db: float
    output_lufs: float
    output_true_peak_db: float
    original_lufs: float | None = None  # --mix add: the original's loudness
    peak_limited: bool = False  # the gain was lowered to keep the true peak under the ceiling

    def to_dict(self) -> dict[str, Any]:
        """Rounded, JSON-safe (``-inf`` is ``None``)."""
        return {k: (round(v, 2) if math.isfinite(v) else None) if isinstance(v, float) else v
                for k, v in asdict(self).items()}  # fmt: skip


def plan_levels(
    generated: Measurement,
    target_lufs: float,
    *,
    gain_db: float | None = None,
    original: Measurement | None = None,
    ceiling_db: float = CEILING_DBTP,
) -> Levels:
    """Gain for the generated track (see the module docstring). ``original``: measured for ``--mix add``."""
    orig = original.lufs if original is not None and original.audible else None
    if not generated.audible or generated.lufs < SILENCE_LUFS:
        return Levels("silence", None, generated.lufs, generated.true_peak_db, 0.0, generated.lufs,
                      generated.true_peak_db, orig)  # fmt: skip
    if orig is not None:
        reference, target = "original", orig + (ADD_OFFSET_LU if gain_db is None else gain_db)
    else:
        reference, target = "target", target_lufs + (gain_db or 0.0)
    gain = target - generated.lufs
    limited = generated.true_peak_db + gain > ceiling_db
    if limited:
        gain = ceiling_db - generated.true_peak_db
    return Levels(reference, target, generated.lufs, generated.true_peak_db, gain, generated.lufs + gain,
                  generated.true_peak_db + gain, orig, limited)  # fmt: skip


def level_track(
    track: str | os.PathLike[str],
    task: str,
    *,
    loudness: float | None,
    gain_db: float | None,
    video: str | os.PathLike[str] | None = None,
    info: MediaInfo | None = None,
) -> Levels:
    """Measure the generated ``track`` (and, for ``--mix add``, the ``video``'s audio) and plan the gain."""
    target = TARGET_LUFS[task] if loudness is None else loudness
    original = None
    if video is not None and (info is None or info.has_audio):
        original = measure_media(video, audio_layout(video))
    return plan_levels(measure_file(track), target, gain_db=gain_db, original=original)


def write_with_gain(src: str | os.PathLike[str], dst: str | os.PathLike[str], gain_db: float) -> Path:
    """Copy the float track ``src`` to ``dst`` (16-bit PCM, format by extension) with ``gain_db`` applied.

    A failed write (a full disk) is an OutputError naming ``dst`` (:func:`vssflow_cli.output.audio_write_errors`).
    """
    import numpy as np
    import soundfile as sf

    from vssflow_cli.output import audio_write_errors

    dst, g = Path(dst), 10 ** (gain_db / 20)
    with sf.SoundFile(str(src)) as f:
        with audio_write_errors(dst, 1 << 16):
            out = sf.SoundFile(str(dst), "w", samplerate=f.samplerate, channels=f.channels, subtype="PCM_16")
        try:
            for block in f.blocks(_CHUNK, dtype="float32"):
                with audio_write_errors(dst, 2 * block.size):
                    out.write(np.clip(block * g, -1.0, 1.0))
        except BaseException:
            with contextlib.suppress(sf.LibsndfileError, OSError):
                out.close()
            raise
        with audio_write_errors(dst, 1 << 16):
            out.close()
    return dst
