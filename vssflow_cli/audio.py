"""Audio representation: waveform <-> log-mel <-> latent, numpy only (no torch on the inference path).

The tiny model's latent is a linear one: 4 consecutive log-mel frames (4 x 64 = 256 values, 40 ms) are projected
onto principal components fitted on the training corpus, which gives 25 latent frames/s like the paper's mel VAE.
The inverse is exact up to the dropped components and is exported as a one-MatMul ONNX graph (``decoder.onnx``).
Waveforms come back from log-mel by Griffin-Lim phase reconstruction (``vocode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from vssflow_cli.config import AudioConfig

try:  # scipy's pocketfft keeps float32 (numpy's promotes to float64): ~5x faster Griffin-Lim here
    from scipy import fft as _fft
except ImportError:  # pragma: no cover
    _fft = np.fft

LOG_FLOOR = 1e-5


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: AudioConfig) -> np.ndarray:
    """Triangular, area-normalised mel filters: (n_mels, n_fft // 2 + 1) float32."""
    n_bins = cfg.n_fft // 2 + 1
    freqs = np.linspace(0.0, cfg.sample_rate / 2, n_bins)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    fb = np.zeros((cfg.n_mels, n_bins))
    for i in range(cfg.n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[i] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb.astype(np.float32)


@lru_cache(maxsize=8)
def _mel_pinv(cfg: AudioConfig) -> np.ndarray:
    return np.linalg.pinv(mel_filterbank(cfg).astype(np.float64)).astype(np.float32)


@lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def stft(wave: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Centred STFT with a periodic Hann window: (N,) -> (N // hop, n_fft // 2 + 1) complex64."""
    n_frames = len(wave) // cfg.hop
    pad = cfg.n_fft // 2
    x = np.pad(np.asarray(wave, dtype=np.float32), (pad, pad + cfg.n_fft), mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft)[:: cfg.hop][:n_frames]
    return _fft.rfft(frames * _window(cfg.n_fft), axis=-1).astype(np.complex64)


@lru_cache(maxsize=16)
def _ola_norm(cfg: AudioConfig, n_frames: int) -> np.ndarray:
    """Sum of squared windows at each output sample (the overlap-add normaliser)."""
    sq = np.broadcast_to(_window(cfg.n_fft) ** 2, (n_frames, cfg.n_fft))
    return _overlap_add(np.ascontiguousarray(sq), cfg.hop)


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """(F, n) frames placed every ``hop`` samples and summed -> (hop * (F - 1) + n,)."""
    n_frames, n = frames.shape
    k = -(-n // hop)  # frame length in hops, rounded up
    padded = np.zeros((n_frames, k * hop), np.float32)
    padded[:, :n] = frames
    blocks = padded.reshape(n_frames, k, hop)
    out = np.zeros((n_frames + k - 1, hop), np.float32)
    for j in range(k):
        out[j : j + n_frames] += blocks[:, j]
    return out.reshape(-1)[: hop * (n_frames - 1) + n]


def istft(spec: np.ndarray, cfg: AudioConfig, length: int) -> np.ndarray:
    """Inverse of :func:`stft` by weighted overlap-add: (F, bins) -> (length,) float32."""
    frames = _fft.irfft(spec, n=cfg.n_fft, axis=-1).astype(np.float32) * _window(cfg.n_fft)
    out = _overlap_add(frames, cfg.hop)
    norm = _ola_norm(cfg, len(spec))
    pad = cfg.n_fft // 2
    return out[pad : pad + length] / np.maximum(norm[pad : pad + length], 1e-3)


def log_mel(wave: np.ndarray, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    """Log-magnitude mel spectrogram: (N,) float -> (N // hop, n_mels) float32."""
    mag = np.abs(stft(wave, cfg))
    return np.log(np.maximum(mag @ mel_filterbank(cfg).T, LOG_FLOOR)).astype(np.float32)


def griffin_lim(logmel: np.ndarray, cfg: AudioConfig = AudioConfig(), iters: int = 32, seed: int = 0) -> np.ndarray:
    """Fast Griffin-Lim (momentum 0.99) from log-mel: (F, n_mels) -> (F * hop,) float32 waveform."""
    mel = np.exp(np.asarray(logmel, dtype=np.float32))
    mag = np.maximum(mel @ _mel_pinv(cfg).T, 0.0)  # (F, bins)
    length = len(logmel) * cfg.hop
    rng = np.random.default_rng(seed)
    angles = np.exp(2j * np.pi * rng.random(mag.shape)).astype(np.complex64)
    prev = np.zeros_like(angles)
    for _ in range(iters):
        rebuilt = stft(istft(mag * angles, cfg, length), cfg)
        accel = rebuilt - 0.99 * prev
        angles = accel / np.maximum(np.abs(accel), 1e-8)
        prev = rebuilt
    return istft(mag * angles, cfg, length)


def vocode(logmel: np.ndarray, cfg: AudioConfig = AudioConfig(), iters: int = 32) -> np.ndarray:
    """Log-mel to a waveform with the peak kept below full scale: (F, n_mels) -> (F * hop,) float32."""
    wave = griffin_lim(logmel, cfg, iters=iters)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    return wave / peak * 0.98 if peak > 0.98 else wave


@dataclass(frozen=True)
class LatentCodec:
    """Linear latent: patches of ``k`` log-mel frames projected on principal components.

    ``mean`` (k * n_mels,), ``components`` (C, k * n_mels) orthonormal rows, ``scale`` () one global scale so the
    latents have unit variance on average (a global scale keeps the components' energy ordering in the loss).
    """

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    mel_per_latent: int = 4

    @property
    def channels(self) -> int:
        return int(self.components.shape[0])

    def encode(self, logmel: np.ndarray) -> np.ndarray:
        """(F, n_mels) -> (F // k, C) float32; trailing frames that do not fill a patch are dropped."""
        k = self.mel_per_latent
        t = len(logmel) // k
        patches = np.asarray(logmel[: t * k], dtype=np.float32).reshape(t, -1)
        return ((patches - self.mean) @ self.components.T / self.scale).astype(np.float32)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """(T, C) -> (T * k, n_mels) float32 (also accepts a leading batch dim)."""
        z = np.asarray(latent, dtype=np.float32)
        patches = (z * self.scale) @ self.components + self.mean
        return patches.reshape(*z.shape[:-2], z.shape[-2] * self.mel_per_latent, -1).astype(np.float32)

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {
            "codec.mean": self.mean.astype(np.float32),
            "codec.components": self.components.astype(np.float32),
            "codec.scale": np.asarray(self.scale, dtype=np.float32).reshape(1),
        }

    @classmethod
    def from_tensors(cls, d: dict[str, np.ndarray], mel_per_latent: int = 4) -> LatentCodec:
        return cls(
            mean=np.asarray(d["codec.mean"], dtype=np.float32),
            components=np.asarray(d["codec.components"], dtype=np.float32),
            scale=np.asarray(d["codec.scale"], dtype=np.float32).reshape(()),
            mel_per_latent=mel_per_latent,
        )

    @classmethod
    def fit(cls, logmels: list[np.ndarray], channels: int, mel_per_latent: int = 4) -> LatentCodec:
        """Principal components of all patches of the given log-mels (each (F_i, n_mels))."""
        k = mel_per_latent
        patches = np.concatenate(
            [np.asarray(m[: len(m) // k * k], dtype=np.float64).reshape(-1, k * m.shape[1]) for m in logmels]
        )
        mean = patches.mean(0)
        cov = np.cov((patches - mean).T)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1][:channels]
        comps = evecs[:, order].T
        comps *= np.sign(comps[:, :1] + 1e-12)  # deterministic sign
        scale = np.sqrt(evals[order].clip(min=0).mean())
        return cls(mean.astype(np.float32), comps.astype(np.float32), np.float32(scale), k)

    def explained_variance(self, logmels: list[np.ndarray]) -> float:
        """Share of patch variance kept by the components (1.0 = lossless)."""
        k = self.mel_per_latent
        x = np.concatenate([m[: len(m) // k * k].reshape(-1, k * m.shape[1]) for m in logmels]).astype(np.float64)
        x = x - self.mean
        kept = (x @ self.components.T.astype(np.float64)) ** 2
        return float(kept.sum() / (x**2).sum())

    def to_onnx(self, path: str | Path, n_mels: int) -> Path:
        """Write ``decoder.onnx``: input "latent" (B, T, C) -> output "logmel" (B, T * k, n_mels)."""
        from onnx import helper, numpy_helper

        w = (self.components * self.scale).astype(np.float32)  # (C, k * n_mels)
        inits = [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(self.mean.astype(np.float32), "mean"),
            numpy_helper.from_array(np.array([0, -1, n_mels], dtype=np.int64), "shape"),
        ]
        nodes = [
            helper.make_node("MatMul", ["latent", "w"], ["p"]),
            helper.make_node("Add", ["p", "mean"], ["q"]),
            helper.make_node("Reshape", ["q", "shape"], ["logmel"]),
        ]
        return _save_graph(path, "vssflow_latent_decoder", nodes, inits, ("latent", ["B", "T", self.channels]),
                           ("logmel", ["B", "F", n_mels]))

    def encoder_to_onnx(self, path: str | Path, n_mels: int) -> Path:
        """Write ``encoder.onnx``: input "logmel" (B, F, n_mels), F a multiple of k -> "latent" (B, F // k, C).

        The inverse of the decoder (the components are orthonormal), used to encode the acoustic prior.
        """
        from onnx import helper, numpy_helper

        inits = [
            numpy_helper.from_array((self.components.T / self.scale).astype(np.float32), "w"),  # (k * n_mels, C)
            numpy_helper.from_array(self.mean.astype(np.float32), "mean"),
            numpy_helper.from_array(np.array([0, -1, self.mel_per_latent * n_mels], dtype=np.int64), "shape"),
        ]
        nodes = [
            helper.make_node("Reshape", ["logmel", "shape"], ["patches"]),
            helper.make_node("Sub", ["patches", "mean"], ["centred"]),
            helper.make_node("MatMul", ["centred", "w"], ["latent"]),
        ]
        return _save_graph(path, "vssflow_latent_encoder", nodes, inits, ("logmel", ["B", "F", n_mels]),
                           ("latent", ["B", "T", self.channels]))


def _save_graph(path: str | Path, name: str, nodes: list, inits: list, inp: tuple, out: tuple) -> Path:
    """Check and atomically save a one-input, one-output float graph."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(inp[0], TensorProto.FLOAT, inp[1])],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    from vssflow_cli.output import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))
    return path
