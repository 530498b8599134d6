"""Training windows from the offline corpus, with VSSFlow's feature-level sound/speech mixing.

Each item is one model window of ``W = config.window_frames`` latent frames:

- ``speech``: a speech clip (talking-face video, lips, phonemes) at a random offset, silence around it;
- ``sound``: a sound clip (rendered scene video, sync features) at a random offset;
- ``add``: a speech clip placed inside a sound clip; the background waveform is scaled by U(0.3, 0.7) and the speech
  added; video/sync features are summed over the speech span;
- ``insert``: the same, but the span of the sound clip is replaced by the speech clip (waveform and video features).

Phoneme ids and lip features are padded by the offset in both mixing modes, as in the paper. The latent target is
computed from the composed waveform (log-mel -> :class:`~vssflow_cli.audio.LatentCodec`).

With ``config.prior_dim > 0`` every window also carries the acoustic prior (:mod:`vssflow_cli.prior`): a log-mel
track that is silence wherever nothing is said and the teacher's aligned reading over each speech clip that has one
(``CORPUS/priors/<id>.safetensors``, from :mod:`vssflow_cli.train.priors`), encoded by the same codec. A window
holding a speech clip without a teacher reading (a language the teacher does not read) gets the all-zero "no prior".
Two more modes come with the prior. ``mute`` shows a talking face (lips, video) over silence with a silent prior, so
the lips alone never make speech: where the prior says nothing, the model says nothing. ``echo`` is a speech window
whose target is the teacher's aligned reading itself instead of the recording: it teaches the model to carry the
prior's words through (the recordings alone are one voice, so without it the model must learn the words and a
voice conversion at once, from 25 minutes).

With ``config.prompt_words`` every window also carries a text prompt (:mod:`vssflow_cli.prompt`): a sound clip's
caption, else its category path as words ("footsteps/gravel" -> "footsteps gravel"); ``add`` and ``insert``
windows take their background's, speech windows none. A sound window's prompt is left out with p =
``PROMPT_DROP``, and when it is kept the window's video tokens are hidden with p = ``PROMPT_ONLY`` (sync stays):
a rendered scene shows its category in its texture, so without that the model could ignore the words.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vssflow_cli.audio import LatentCodec, log_mel
from vssflow_cli.config import ModelConfig
from vssflow_cli.prior import SILENCE_LOGMEL

FEATURE_KEYS = ("video", "sync", "lip")
MODES = ("speech", "echo", "sound", "add", "insert", "mute")
PROMPT_DROP = 0.3  # sound windows trained without their prompt (the no-prompt foley of the last release)
PROMPT_ONLY = 0.35  # windows whose video tokens are hidden when the prompt is kept


HEAD_PRIOR_P = 0.5  # share of speech windows given the mel head's prior, where the clip has one


@dataclass
class Clip:
    """One corpus clip held in memory: ``wave`` (T * spl,), features (T, D), ``phonemes`` (T,) int64."""

    clip_id: str
    kind: str
    wave: np.ndarray
    video: np.ndarray
    sync: np.ndarray
    lip: np.ndarray
    phonemes: np.ndarray
    lang: str = ""  # speech only: the index row's language code
    prior_mel: np.ndarray | None = None  # (frames * mel_per_latent, n_mels) aligned teacher log-mel, if built
    prior_mel_head: np.ndarray | None = None  # the same through the teacher's mel head (priors --head), if built
    prompt: str = ""  # sound only: the words it is captioned with (prompt.category_text)

    @property
    def frames(self) -> int:
        return len(self.phonemes)


def read_index(corpus: Path) -> list[dict]:
    """Rows of ``index.jsonl`` followed by those of any ``index-*.jsonl`` (clips added by other builders)."""
    rows = []
    for path in [Path(corpus) / "index.jsonl", *sorted(Path(corpus).glob("index-*.jsonl"))]:
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def iter_split(corpus: Path, split: str, max_frames: int) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """(index row, clip tensors) for every built clip of ``split`` that fits in ``max_frames`` latent frames."""
    from safetensors.numpy import load_file

    for row in read_index(corpus):
        if row.get("split") != split:
            continue
        path = Path(corpus) / "clips" / f"{row['id']}.safetensors"
        if not path.exists():
            continue
        t = load_file(str(path))
        if 0 < len(t["phonemes"]) <= max_frames:
            yield row, t


def load_clips(corpus: Path, split: str, max_frames: int, limit: int | None = None) -> list[Clip]:
    """Load every clip of ``split`` that fits in a window (features are small; waves ~2 MB per minute)."""
    from safetensors.numpy import load_file

    clips = []
    for row, t in iter_split(corpus, split, max_frames):
        priors = []
        for name in (f"{row['id']}.safetensors", f"{row['id']}.head.safetensors"):
            f = Path(corpus) / "priors" / name
            priors.append(load_file(str(f))["prior_mel"].astype(np.float32) if f.exists() else None)
        clips.append(
            Clip(row["id"], row["kind"], t["wave"], t["video"], t["sync"], t["lip"], t["phonemes"].astype(np.int64),
                 row.get("lang") or "", prior_mel=priors[0], prior_mel_head=priors[1], prompt=clip_prompt(row))
        )
        if limit and len(clips) >= limit:
            break
    return clips


def clip_prompt(row: dict) -> str:
    """The prompt a corpus clip is trained with: a sound's caption or category words; "" for speech and stills
    (a still picture is silent whatever its prompt says, and the motion gate makes it so at inference)."""
    from vssflow_cli.prompt import category_text

    category = str(row.get("category") or "")
    if row.get("kind") != "sound" or category.startswith("silence/"):
        return ""
    return category_text(category, str(row.get("caption") or ""))


def fit_codec(clips: list[Clip], config: ModelConfig, max_clips: int = 400, seed: int = 0) -> LatentCodec:
    """PCA latent fitted on a fixed subset of training clips plus a stretch of silence."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(clips))[:max_clips]
    mels = [log_mel(clips[i].wave, config.audio) for i in pick]
    mels.append(log_mel(np.zeros(config.audio.sample_rate, np.float32), config.audio))
    return LatentCodec.fit(mels, config.latent_channels, config.audio.mel_per_latent)


class WindowSampler:
    """Draws composed training windows; deterministic for a seed.

    ``__call__(rng)`` returns a dict of numpy arrays: ``latent`` (W, C), ``phonemes`` (W,), ``lip`` (W, Dl),
    ``sync`` (W, Ds), ``video`` (W, Dv) and the mode name.
    """

    def __init__(
        self,
        clips: list[Clip],
        config: ModelConfig,
        codec: LatentCodec,
        mode_probs: dict[str, float] | None = None,
        speech_weights: dict[str, float] | None = None,
    ) -> None:
        self.cfg = config
        self.codec = codec
        self.speech = [c for c in clips if c.kind == "speech"]
        self.sound = [c for c in clips if c.kind == "sound"]
        w = np.array([(speech_weights or {}).get(c.clip_id, 1.0) for c in self.speech], np.float64)
        self.speech_p = w / w.sum() if len(w) and speech_weights else None
        probs = mode_probs or (
            {"speech": 0.25, "echo": 0.12, "sound": 0.31, "add": 0.12, "insert": 0.12, "mute": 0.08}
            if config.prior_dim
            else {"speech": 0.35, "sound": 0.35, "add": 0.15, "insert": 0.15}
        )
        if not self.speech:
            probs = {k: v for k, v in probs.items() if k == "sound"}
        if not self.sound:
            probs = {k: v for k, v in probs.items() if k == "speech"}
        if not probs:
            raise ValueError("the corpus has no usable clips")
        total = sum(probs.values())
        self.modes = list(probs)
        self.probs = np.array([probs[m] / total for m in self.modes])
        self.spl = config.audio.samples_per_latent
        self.silence = codec.encode(log_mel(np.zeros(config.window_frames * self.spl, np.float32), config.audio))
        self.k = config.audio.mel_per_latent

    def _empty(self) -> dict[str, np.ndarray]:
        w, c = self.cfg.window_frames, self.cfg
        return {
            "wave": np.zeros(w * self.spl, np.float32),
            "phonemes": np.zeros(w, np.int64),
            "lip": np.zeros((w, c.lip_dim), np.float32),
            "sync": np.zeros((w, c.sync_dim), np.float32),
            "video": np.zeros((w, c.video_dim), np.float32),
            "prior_mel": np.full((w * self.k, c.audio.n_mels), SILENCE_LOGMEL, np.float32),
            "prior_known": True,
            "prompt": "",
        }

    def _speech(self, rng: np.random.Generator) -> Clip:
        if self.speech_p is None:
            return self.speech[rng.integers(len(self.speech))]
        return self.speech[rng.choice(len(self.speech), p=self.speech_p)]

    def _place(self, item: dict, clip: Clip, off: int, gain: float, rng: np.random.Generator | None = None) -> None:
        n, s = clip.frames, self.spl
        item["wave"][off * s : (off + n) * s] += clip.wave[: n * s] * gain
        for k in FEATURE_KEYS:
            item[k][off : off + n] += getattr(clip, k)
        item["phonemes"][off : off + n] = clip.phonemes
        if clip.kind == "sound" and not item["prompt"]:
            item["prompt"] = clip.prompt
        if clip.kind == "speech":
            prior = clip.prior_mel
            if clip.prior_mel_head is not None and rng is not None and rng.random() < HEAD_PRIOR_P:
                prior = clip.prior_mel_head  # the DiT learns both readings: full Kokoro, and dub --fast-teacher's
            if prior is None:
                item["prior_known"] = False
            else:
                m = prior[: n * self.k]
                item["prior_mel"][off * self.k : off * self.k + len(m)] = m

    def __call__(self, rng: np.random.Generator) -> dict:
        w = self.cfg.window_frames
        mode = self.modes[rng.choice(len(self.modes), p=self.probs)]
        item = self._empty()
        gain = float(10 ** (rng.uniform(-6, 3) / 20))
        if mode in ("speech", "echo", "sound"):
            clip = self._speech(rng) if mode != "sound" else self.sound[rng.integers(len(self.sound))]
            self._place(item, clip, int(rng.integers(0, w - clip.frames + 1)), gain, rng)
        elif mode == "mute":  # a moving mouth with nothing said: lips and face only, silence out
            clip = self._speech(rng)
            off = int(rng.integers(0, w - clip.frames + 1))
            for k in ("lip", "video", "sync"):
                item[k][off : off + clip.frames] += getattr(clip, k)
        else:
            bg = self.sound[rng.integers(len(self.sound))]
            sp = self._speech(rng)
            bg_off = int(rng.integers(0, w - bg.frames + 1))
            bg_scale = float(rng.uniform(0.3, 0.7)) if mode == "add" else 1.0
            self._place(item, bg, bg_off, gain * bg_scale)
            off = int(rng.integers(0, w - sp.frames + 1))
            span = slice(off * self.spl, (off + sp.frames) * self.spl)
            if mode == "insert":
                item["wave"][span] = 0.0
                for k in ("video", "sync"):
                    item[k][off : off + sp.frames] = 0.0
            self._place(item, sp, off, gain, rng)
        peak = float(np.abs(item["wave"]).max())
        if peak > 0.99:
            item["wave"] /= peak / 0.99
        if mode == "echo" and item["prior_known"]:  # the target is the teacher's aligned reading itself
            floor = np.float32(SILENCE_LOGMEL)
            latent = self.codec.encode(np.maximum(item["prior_mel"] + np.float32(np.log(gain)), floor))
        else:
            latent = self.codec.encode(log_mel(item["wave"], self.cfg.audio))
        out = {k: item[k] for k in ("phonemes", "lip", "sync", "video")}
        out["latent"] = latent[:w]
        out["mode"] = mode
        if self.cfg.prior_dim:
            known = item["prior_known"]
            absent = np.zeros((w, self.cfg.prior_dim), np.float32)
            out["prior"] = self.codec.encode(item["prior_mel"])[:w] if known else absent
        if self.cfg.prompt_words:
            self._prompt(out, item["prompt"], rng)
        return out

    def _prompt(self, out: dict, text: str, rng: np.random.Generator) -> None:
        from vssflow_cli.prompt import prompt_ids

        if text and rng.random() < PROMPT_DROP:
            text = ""
        out["prompt"] = prompt_ids(text, self.cfg.prompt_words, self.cfg.prompt_tokens)
        out["prompt_text"] = text
        if text and rng.random() < PROMPT_ONLY:
            out["video"] = np.zeros_like(out["video"])

    def keys(self) -> tuple[str, ...]:
        """The arrays of a batch: the latent and the model's conditions."""
        from vssflow_cli.config import condition_names

        return ("latent", *condition_names(self.cfg))

    def batch(self, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
        items = [self(rng) for _ in range(size)]
        return {k: np.stack([it[k] for it in items]) for k in self.keys()}
