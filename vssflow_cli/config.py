"""Model and audio configuration: plain dataclasses, no torch, shared by training and runtime.

The config is the only source for rebuilding a model: it is stored in every checkpoint
(safetensors metadata + JSON) and in every bundle's ``manifest.json``.

Condition contract: :data:`CONDITIONS` below is the one list of the network's inputs besides the
noisy latent ``x`` (B, T, latent_channels) and the flow time ``t`` (B,) in [0, 1] (0 = noise,
1 = data). Each :class:`Condition` has a name (the ONNX graph input and the keyword of
``VSSFlowDiT.forward``), a dtype, a role and a width taken from :class:`ModelConfig`; a width of 0
means the model has no such input (like ``speaker_dim = 0``). Time-aligned tensors are at
``latent_fps``, channels last:

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
``prompt``     (B, prompt_tokens) int64    foley text prompt word ids, 0 = none (only if prompt_words)
=============  ==========================  =========================================

Roles:

* in-context (B, T, width): concatenated to the latent along channels (ids are embedded first);
* cross (B, T, width): cross-attention tokens, one per frame;
* global (B, width): one cross-attention token for the whole window;
* tokens (B, L) int64: L word ids embedded into L cross-attention tokens for the whole window (id 0 = no token,
  masked out of attention).

The unconditional branch of classifier-free guidance is every condition zeroed together (id 0 =
no speech). Adding a condition = one config width field + one :data:`CONDITIONS` entry here, plus
its projection in ``model/dit.py``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


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
    prompt_words: tuple[str, ...] = ()  # foley prompt vocabulary (vssflow_cli.prompt); () = no prompt input
    prompt_tokens: int = 8  # prompt words the model reads per window
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
        return self.latent_channels + sum(c.width(self) for c in conditions(self) if c.role == IN_CONTEXT)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        audio = AudioConfig(**d.pop("audio", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        if "prompt_words" in d:  # JSON gives a list; the config is frozen and hashable
            d["prompt_words"] = tuple(str(w) for w in d["prompt_words"])
        return cls(audio=audio, **d)

    @classmethod
    def from_json(cls, s: str) -> ModelConfig:
        return cls.from_dict(json.loads(s))


# --------------------------------------------------------------------------- condition contract

IN_CONTEXT, CROSS, GLOBAL, TOKENS = "in-context", "cross", "global", "tokens"


@dataclass(frozen=True)
class Condition:
    """One conditioning input of the network (see the module docstring)."""

    name: str
    role: str  # IN_CONTEXT | CROSS | GLOBAL | TOKENS
    width: Callable[[ModelConfig], int]  # channels inside the model (ids: embedding width); 0 = absent
    doc: str
    vocab: Callable[[ModelConfig], int] | None = None  # set for ids: int64 (B, T) or (B, L) in [0, vocab)
    features: str | None = None  # id of the extractor that computes it, stored in bundles and checked

    @property
    def dtype(self) -> str:
        return "int64" if self.vocab is not None else "float32"

    def present(self, config: ModelConfig) -> bool:
        return self.width(config) > 0

    def shape(self, config: ModelConfig, batch: int, frames: int) -> tuple[int, ...]:
        """Array shape for ``batch`` windows of ``frames`` latent frames."""
        if self.role == TOKENS:
            return (batch, config.prompt_tokens)
        if self.vocab is not None:
            return (batch, frames)
        if self.role == GLOBAL:
            return (batch, self.width(config))
        return (batch, frames, self.width(config))


CONDITIONS: tuple[Condition, ...] = (
    Condition("phonemes", IN_CONTEXT, lambda c: c.phoneme_dim, "phoneme id per latent frame, 0 = no speech",
              vocab=lambda c: c.phoneme_vocab),
    Condition("lip", IN_CONTEXT, lambda c: c.lip_dim, "lip features, zeros where no face", features="vssflow-lip-v1"),
    Condition("sync", IN_CONTEXT, lambda c: c.sync_dim, "sync/motion features", features="vssflow-visual-v1"),
    Condition("video", CROSS, lambda c: c.video_dim, "visual features", features="vssflow-visual-v1"),
    Condition("speaker", GLOBAL, lambda c: c.speaker_dim, "voice embedding"),
    Condition("prior", IN_CONTEXT, lambda c: c.prior_dim,
              "acoustic prior: the TTS teacher's reading as codec latents, warped onto the speech spans; the latent "
              "of silence where nothing is said, zeros = no prior", features="vssflow-prior-kokoro-v1"),
    Condition("prompt", TOKENS, lambda c: c.cross_dim if c.prompt_words else 0,
              "foley text prompt: word ids of vssflow_cli.prompt (word i of prompt_words -> i + 2), 0 = none",
              vocab=lambda c: len(c.prompt_words) + 2),
)
"""Every condition, in the order of ``VSSFlowDiT.forward``'s arguments after ``x, t``."""

def conditions(config: ModelConfig) -> tuple[Condition, ...]:
    """The conditions ``config``'s model takes (width > 0), in forward-argument order."""
    return tuple(c for c in CONDITIONS if c.present(config))


def per_window(config: ModelConfig) -> frozenset[str]:
    """Conditions that hold one value per window (no time axis): the same array goes to every window."""
    return frozenset(c.name for c in conditions(config) if c.role in (GLOBAL, TOKENS))


def condition_names(config: ModelConfig) -> tuple[str, ...]:
    return tuple(c.name for c in conditions(config))


def feature_ids(config: ModelConfig) -> dict[str, str]:
    """Condition name -> feature extractor id, for the conditions of ``config`` computed by one."""
    return {c.name: c.features for c in conditions(config) if c.features}


def condition_shapes(config: ModelConfig, batch: int, frames: int) -> dict[str, tuple[int, ...]]:
    """name -> expected array shape of every condition of ``config``."""
    return {c.name: c.shape(config, batch, frames) for c in conditions(config)}


def random_inputs(config: ModelConfig, batch: int, frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random conditions in the contract's shapes and dtypes (ids uniform over the vocabulary,
    floats standard normal), drawn in :data:`CONDITIONS` order. numpy only."""
    import numpy as np

    out: dict[str, np.ndarray] = {}
    for c in conditions(config):
        shape = c.shape(config, batch, frames)
        if c.vocab is not None:
            out[c.name] = rng.integers(0, c.vocab(config), shape, dtype=np.int64)
        else:
            out[c.name] = rng.standard_normal(shape, dtype=np.float32)
    return out


# --------------------------------------------------------------------------- presets

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
