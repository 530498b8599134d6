"""Model and audio configuration: plain dataclasses, no torch, shared by training and runtime.

The config is the only source for rebuilding a model: it is stored in every checkpoint
(safetensors metadata + JSON) and in every bundle's ``manifest.json``.

Condition contract (all time-aligned tensors are at ``latent_fps``, channels last):

=============  ==========================  =========================================
name           shape                       meaning
=============  ==========================  =========================================
``x``          (B, T, latent_channels)     noisy latent (sampler state)
``t``          (B,)                        flow time in [0, 1]; 0 = noise, 1 = data
``phonemes``   (B, T) int64                phoneme id per latent frame, 0 = no speech
``lip``        (B, T, lip_dim)             lip features, zeros where absent
``sync``       (B, T, sync_dim)            sync/motion features, in-context
``video``      (B, T, video_dim)           visual features, cross-attention tokens
``speaker``    (B, speaker_dim)            voice embedding (only if speaker_dim > 0)
``prior``      (B, T, prior_dim)           TTS teacher's latent, in-context (only if prior_dim > 0)
=============  ==========================  =========================================

The unconditional branch of classifier-free guidance is every condition zeroed together.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

CONDITION_NAMES = ("phonemes", "lip", "sync", "video", "speaker", "prior")


@dataclass(frozen=True)
class AudioConfig:
    """Waveform <-> mel <-> latent settings. Latent frame = ``mel_per_latent`` mel frames."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 160  # 100 mel frames / s
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    mel_per_latent: int = 4  # 100 / 4 = 25 latent frames / s

    @property
    def mel_fps(self) -> float:
        return self.sample_rate / self.hop

    @property
    def latent_fps(self) -> float:
        return self.mel_fps / self.mel_per_latent

    @property
    def samples_per_latent(self) -> int:
        return self.hop * self.mel_per_latent


@dataclass(frozen=True)
class ModelConfig:
    """DiT shape and condition dimensions. See the module docstring for the tensor contract."""

    name: str = "tiny"
    latent_channels: int = 64
    window_frames: int = 125  # frames per model window (latent fps * window seconds)
    width: int = 256
    depth: int = 6
    heads: int = 4
    ffn_hidden: int = 704  # SwiGLU hidden size
    cross_dim: int = 256  # width of cross-attention tokens after the condition projections
    video_dim: int = 208
    lip_dim: int = 8
    sync_dim: int = 18
    phoneme_vocab: int = 256
    phoneme_dim: int = 32
    speaker_dim: int = 0  # 0 = no speaker token
    prior_dim: int = 0  # 0 = no acoustic prior; else the teacher's latent (latent_channels wide), in-context
    cond_dropout: float = 0.1
    audio: AudioConfig = field(default_factory=AudioConfig)

    @property
    def latent_fps(self) -> float:
        return self.audio.latent_fps

    @property
    def window_seconds(self) -> float:
        return self.window_frames / self.latent_fps

    @property
    def in_channels(self) -> int:
        """Channels after concatenating the in-context conditions to the latent."""
        return self.latent_channels + self.lip_dim + self.phoneme_dim + self.sync_dim + self.prior_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        audio = AudioConfig(**d.pop("audio", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(audio=audio, **d)

    @classmethod
    def from_json(cls, s: str) -> "ModelConfig":
        return cls.from_dict(json.loads(s))


def tiny_config() -> ModelConfig:
    """The embedded default: trainable on 2 CPU cores, ~6M parameters, 5 s windows."""
    return ModelConfig()


def paper_config() -> ModelConfig:
    """VSSFlow's reference shapes: 10 layers, 1536 wide, 24 heads, 128-ch latent, 10 s windows."""
    return ModelConfig(
        name="paper",
        latent_channels=128,
        window_frames=250,
        width=1536,
        depth=10,
        heads=24,
        ffn_hidden=4096,
        cross_dim=768,
        video_dim=768,  # CLIP ViT-B/16 CLS, 10 fps interpolated to 25 fps
        lip_dim=1024,  # lip-reading encoder features
        sync_dim=768,  # sync features, 24 fps interpolated to 25 fps
        phoneme_vocab=256,
        phoneme_dim=32,
        speaker_dim=256,
    )


PRESETS = {"tiny": tiny_config, "paper": paper_config}
