"""Speaker token: a 256-d voice embedding of a reference recording (numpy + onnxruntime, no torch).

The encoder is Resemblyzer's GE2E speaker encoder (Apache-2.0), exported to
``data/speaker_encoder.onnx`` by ``python -m vssflow_cli.train.export_speaker``; ``mels (B, 160, 40)``
float32 -> ``embeddings (B, 256)`` float32, each L2-normalised. Its front end is reproduced here in numpy:

- the wave is scaled up (never down) to -30 dBFS RMS, as Resemblyzer's ``normalize_volume``;
- long silences are shortened: Resemblyzer uses webrtcvad for this; here silero-vad
  (:mod:`vssflow_cli.vad`, already shipped) finds the speech, each span keeps 90 ms of its
  surroundings (Resemblyzer's dilation of 3 x 30 ms windows), and the spans are joined;
- a power (not log) mel spectrogram like ``librosa.feature.melspectrogram`` with its defaults:
  400-sample (25 ms) periodic Hann window, 160-sample (10 ms) hop, centred with zero padding
  (librosa >= 0.10), ``|STFT|**2``, 40 Slaney-scale, Slaney-normalised mel filters from 0 to 8 kHz;
- partial utterances of 160 frames (1.6 s), 1.3 per second; the last one is kept when it is at
  least 75 % covered by audio; the partial embeddings are averaged and re-normalised.

Too little speech (under 0.5 s after trimming, or a shorter wave with ``trim=False``) raises
:class:`InputError` instead of padding: one zero-padded partial of a short word gives an embedding
that says little about the voice, and a wrong voice is worse than a clear message.

The front-end parameters are read from ``data/speaker_encoder.json`` (written with the model), so the
model file and the features it expects travel together.

Cost: about 35 ms of CPU for a 5 s reference (VAD, mels, 5 partials through the LSTM). One ONNX thread
is the default: the 3-layer LSTM over a handful of partials does not split well, and two threads took
twice the CPU for no shorter wall time on a shared 2-core machine.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vssflow_cli.errors import InputError, ModelError

DATA = Path(__file__).resolve().parent / "data"
MODEL_PATH = DATA / "speaker_encoder.onnx"
META_PATH = DATA / "speaker_encoder.json"
EMBED_DIM = 256
MIN_SPEECH_S = 0.5
VAD_PAD_S = 0.09  # Resemblyzer keeps 3 x 30 ms VAD windows around speech


@dataclass(frozen=True)
class FrontEnd:
    """Resemblyzer's front-end parameters (``resemblyzer/hparams.py`` and ``embed_utterance``)."""

    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms window
    hop: int = 160  # 10 ms
    n_mels: int = 40
    partial_frames: int = 160  # 1.6 s per partial utterance
    partials_per_s: float = 1.3
    min_coverage: float = 0.75
    target_dbfs: float = -30.0  # volume normalisation, increase only

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@functools.lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int = 16000, n_fft: int = 400, n_mels: int = 40) -> np.ndarray:
    """Slaney-scale triangular filters from 0 Hz to Nyquist, Slaney area normalisation (librosa's
    ``filters.mel`` defaults): (n_mels, n_fft // 2 + 1) float32."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


_F_SP = 200.0 / 3  # Slaney scale: linear below 1 kHz ...
_MIN_LOG_HZ, _LOG_STEP = 1000.0, np.log(6.4) / 27.0  # ... logarithmic above


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_HZ / _F_SP + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    min_log_mel = _MIN_LOG_HZ / _F_SP
    return np.where(mel >= min_log_mel, _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - min_log_mel)), mel * _F_SP)


def mel_spectrogram(wave: np.ndarray, fe: FrontEnd = FrontEnd()) -> np.ndarray:
    """Power mel spectrogram (Resemblyzer's ``wav_to_mel_spectrogram``): (N,) -> (1 + N // hop, n_mels) float32."""
    from scipy import fft

    x = np.pad(np.asarray(wave, dtype=np.float32).reshape(-1), fe.n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(x, fe.n_fft)[:: fe.hop]  # (F, n_fft)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(fe.n_fft) / fe.n_fft)).astype(np.float32)
    spec = fft.rfft(frames * window, axis=-1)  # (F, n_fft // 2 + 1) complex64
    power = spec.real**2 + spec.imag**2
    return (power @ mel_filterbank(fe.sample_rate, fe.n_fft, fe.n_mels).T).astype(np.float32)


def partial_starts(n_samples: int, fe: FrontEnd = FrontEnd()) -> list[int]:
    """First mel frame of each partial utterance of a wave of ``n_samples`` (Resemblyzer's
    ``compute_partial_slices``); each partial covers frames ``[start, start + partial_frames)``."""
    n_frames = int(np.ceil((n_samples + 1) / fe.hop))
    step = int(np.round(fe.sample_rate / fe.partials_per_s / fe.hop))
    if not 0 < step <= fe.partial_frames:
        raise ValueError(f"partials_per_s={fe.partials_per_s} gives a step of {step} frames")
    starts = list(range(0, max(1, n_frames - fe.partial_frames + step + 1), step))
    coverage = (n_samples - starts[-1] * fe.hop) / (fe.partial_frames * fe.hop)
    if coverage < fe.min_coverage and len(starts) > 1:
        starts.pop()
    return starts


def partial_mels(wave: np.ndarray, fe: FrontEnd = FrontEnd()) -> np.ndarray:
    """Mel spectrograms of the partial utterances of a preprocessed wave: (N,) -> (P, partial_frames, n_mels)."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    starts = partial_starts(wave.size, fe)
    need = (starts[-1] + fe.partial_frames) * fe.hop
    if need > wave.size:
        wave = np.pad(wave, (0, need - wave.size))
    mel = mel_spectrogram(wave, fe)
    return np.stack([mel[s : s + fe.partial_frames] for s in starts])


def normalize_volume(wave: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Scale ``wave`` (N,) up to ``target_dbfs`` RMS; louder waves and silence are returned unchanged."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    if rms <= 0.0:
        return wave
    gain_db = target_dbfs - 20.0 * np.log10(rms)
    return wave if gain_db < 0 else (wave * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def trim_silences(wave: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """The speech of ``wave`` (N,) with 90 ms kept around each span, spans joined: (M,), M <= N."""
    from vssflow_cli.vad import speech_spans

    spans = speech_spans(wave, pad_s=VAD_PAD_S)
    parts = [wave[int(round(s * sample_rate)) : int(round(e * sample_rate))] for s, e in spans]
    return np.concatenate(parts) if parts else wave[:0]


def preprocess(wave: np.ndarray, fe: FrontEnd = FrontEnd(), *, trim: bool = True) -> np.ndarray:
    """Volume-normalised, silence-trimmed float32 wave (Resemblyzer's ``preprocess_wav``): (N,) -> (M,).

    Raises :class:`InputError` when the wave is not 1-D, not finite, or holds under 0.5 s of speech.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise InputError(f"speaker reference must be mono audio (one channel), got an array of shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise InputError("speaker reference audio contains NaN or infinite samples")
    wave = normalize_volume(wave, fe.target_dbfs)
    if trim:
        wave = trim_silences(wave, fe.sample_rate)
    seconds = wave.size / fe.sample_rate
    if seconds < MIN_SPEECH_S:
        what = "speech" if trim else "audio"
        raise InputError(
            f"speaker reference has {seconds:.2f} s of {what}; at least {MIN_SPEECH_S} s is needed "
            "— give a longer recording of the voice"
        )
    return wave


@dataclass(frozen=True)
class _Encoder:
    session: object  # onnxruntime.InferenceSession
    front_end: FrontEnd


@functools.lru_cache(maxsize=2)
def _encoder(threads: int = 1) -> _Encoder:
    """The ONNX session (``threads`` intra-op threads, CPU) and the front end from the json beside it.

    The model's sha256 must equal the json's ``onnx_sha256``, else :class:`ModelError`.
    """
    import onnxruntime as ort

    try:
        meta = json.loads(META_PATH.read_text(encoding="utf-8"))
        blob = MODEL_PATH.read_bytes()
        front_end = FrontEnd(**meta["front_end"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"speaker encoder files missing or unreadable ({type(e).__name__}) — reinstall vssflow") from e
    if hashlib.sha256(blob).hexdigest() != meta.get("onnx_sha256"):
        raise ModelError(f"speaker encoder {MODEL_PATH} is damaged (sha256 mismatch) — reinstall vssflow")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    return _Encoder(session, front_end)


def encode_mels(mels: np.ndarray, threads: int = 1) -> np.ndarray:
    """Run the encoder on partial mels: (P, 160, 40) float32 -> (P, 256) float32, each row unit norm."""
    enc = _encoder(threads)
    (out,) = enc.session.run(["embeddings"], {"mels": np.ascontiguousarray(mels, dtype=np.float32)})
    return out


def embed(wave: np.ndarray, *, trim: bool = True, threads: int = 1) -> np.ndarray:
    """Speaker embedding of a 16 kHz mono float32 recording: (N,) -> (256,) float32, unit L2 norm.

    ``trim=False`` skips the silence trimming (the wave is taken as all speech); ``threads`` is the ONNX
    Runtime intra-op thread count (one cached session per value). Raises
    :class:`InputError` for under 0.5 s of speech, :class:`ModelError` for a damaged model.
    """
    fe = _encoder(threads).front_end
    partials = encode_mels(partial_mels(preprocess(wave, fe, trim=trim), fe), threads)  # (P, 256)
    mean = partials.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (256,) (1 = same direction; 0 for a zero vector)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {a.shape} vs {b.shape}")
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else 0.0
