"""Speech -> timed script: one adapter over whisperx (where it imports) and faster-whisper.

Both backends read CTranslate2 Whisper models (a local folder holding ``model.bin`` or a Hub id
such as ``Systran/faster-whisper-small``; a Hub id downloads on first use, a folder never does).
Segments come back tightened to their word timestamps and split at pauses, ready for
:func:`write_srt` and for :func:`vssflow_cli.text.parse_script` to read back.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vssflow_cli.errors import InputError, ModelError, OutputError, UsageError
from vssflow_cli.output import atomic_output
from vssflow_cli.text import Segment

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MAX_PAUSE_S = 0.6  # split a segment where its words pause longer than this
INSTALL_HINT = "run `pip install 'vssflow[asr]'` and pass `--asr-model PATH` (a faster-whisper model folder)"
_MARKUP = re.compile(r"[<>{}]")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# --------------------------------------------------------------------------- inputs


def _load_audio(audio: str | Path | np.ndarray) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        wave = np.asarray(audio, np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono 16 kHz wave (n,), got shape {wave.shape}")
        return wave
    path = Path(audio)
    if not path.is_file():
        raise InputError(f"audio file not found: {path} — check the path")
    from faster_whisper.audio import (
        decode_audio,  # PyAV: reads the audio track of any media file
    )

    try:
        return decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    except Exception as e:  # PyAV raises its own error classes
        raise InputError(f"cannot decode audio from {path.name}: {e} — is it a media file with sound?") from e


def _whisper_language(lang: str | None) -> str | None:
    """espeak-style codes (en-us, fr-fr) -> Whisper's (en, fr); None = detect."""
    if not lang:
        return None
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    code = lang.lower().replace("_", "-").split("-")[0]
    if code not in _LANGUAGE_CODES:
        raise UsageError(f"transcription does not know language '{lang}' — use a code like en, fr, es, de, ru")
    return code


def _resolve_model(model: str | Path) -> tuple[str, bool]:
    """(model argument for the backend, is_local_folder)."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model.bin").is_file():
            raise ModelError(
                f"{path} is not a faster-whisper model folder (no model.bin) — convert one with "
                "`ct2-transformers-converter` or pass a Hub id like Systran/faster-whisper-small"
            )
        return str(path), True
    # A Hub id is "name" (a faster-whisper size such as "small") or "owner/name".
    if isinstance(model, Path) or not _HUB_ID.match(str(model)):
        raise ModelError(f"ASR model folder not found: {model} — pass `--asr-model PATH` to an existing folder")
    return str(model), False


# --------------------------------------------------------------------------- backends


@functools.lru_cache(maxsize=2)
def _faster_whisper_model(model: str, device: str, compute_type: str):
    from faster_whisper import WhisperModel

    try:
        return WhisperModel(model, device=device, compute_type=compute_type)
    except Exception as e:
        raise ModelError(
            f"cannot load ASR model '{model}' ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}) "
            "— if offline, pass `--asr-model PATH` to a local faster-whisper model folder"
        ) from e


def _words_to_segments(items, duration: float) -> list[Segment]:
    """Backend segments (start, end, text, words[(start, end, word)]) -> tight, pause-split Segments."""
    out: list[Segment] = []
    for start, end, text, words in items:
        words = [w for w in words if w[0] is not None and w[1] is not None]
        if not words:
            groups = [(start, end, text)]
        else:
            groups, cur = [], [words[0]]
            for w in words[1:]:
                if w[0] - cur[-1][1] > MAX_PAUSE_S:
                    groups.append((cur[0][0], cur[-1][1], "".join(x[2] for x in cur)))
                    cur = []
                cur.append(w)
            groups.append((cur[0][0], cur[-1][1], "".join(x[2] for x in cur)))
        for s, e, t in groups:
            t = _clean_text(t)
            s, e = max(0.0, float(s)), min(duration, float(e))
            if out and s < out[-1].end:
                s = out[-1].end
            if t and e - s >= 0.02:
                out.append(Segment(round(s, 3), round(e, 3), t))
    return out


def _clean_text(text: str) -> str:
    """Drop control/format characters, replacement chars and subtitle markup; squeeze spaces."""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch == " " or ch.isspace() or unicodedata.category(ch)[0] != "C" and ch != "\ufffd"
    )
    return re.sub(r"\s+", " ", _MARKUP.sub("", kept)).strip()


def _run_faster_whisper(wave: np.ndarray, model: str, lang: str | None, device: str, compute_type: str, beam_size: int):
    asr = _faster_whisper_model(model, device, compute_type)
    segments, _info = asr.transcribe(
        wave, language=lang, word_timestamps=True, beam_size=beam_size, vad_filter=False
    )
    items = []
    for seg in segments:
        words = [(w.start, w.end, w.word) for w in (seg.words or [])]
        items.append((seg.start, seg.end, seg.text, words))
    return items


def _run_whisperx(wave: np.ndarray, model: str, lang: str | None, device: str, compute_type: str, beam_size: int):
    """whisperx: batched faster-whisper + wav2vec2 alignment (alignment skipped if it cannot load)."""
    import whisperx

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    ctype = compute_type if compute_type != "default" else ("float16" if device == "cuda" else "int8")
    asr = whisperx.load_model(model, device, compute_type=ctype, language=lang, asr_options={"beam_size": beam_size})
    result = asr.transcribe(wave, batch_size=8, language=lang)
    segments = result["segments"]
    try:
        align_model, meta = whisperx.load_align_model(language_code=result["language"], device=device)
        segments = whisperx.align(segments, align_model, meta, wave, device)["segments"]
    except Exception as e:  # noqa: BLE001  (alignment models come from the network; segment times still work)
        log.warning("whisperx alignment unavailable (%s); using segment times", e)
    items = []
    for seg in segments:
        words = [(w.get("start"), w.get("end"), " " + w.get("word", "")) for w in seg.get("words", [])]
        items.append((seg["start"], seg["end"], seg["text"], words))
    return items


def available_backends() -> list[str]:
    """Installed transcription backends, preferred first."""
    candidates = (("whisperx", "whisperx"), ("faster-whisper", "faster_whisper"))
    return [name for name, module in candidates if importlib.util.find_spec(module)]


def transcribe(
    audio: str | Path | np.ndarray,
    model: str | Path,
    lang: str | None = None,
    device: str = "auto",
    backend: str = "auto",
    compute_type: str = "default",
    beam_size: int = 5,
) -> list[Segment]:
    """Transcribe speech into timed segments (start/end in seconds, sorted, non-overlapping).

    audio: a media file path or a mono float32 wave at 16 kHz. model: a faster-whisper
    (CTranslate2) model folder or Hub id. lang: e.g. "en" or "en-us"; None detects it.
    backend: "auto" (whisperx if it imports, else faster-whisper), "whisperx" or "faster-whisper".
    Raises ModelError when no backend or model is available, InputError for unreadable audio.
    """
    backends = available_backends()
    if "faster-whisper" not in backends:
        raise ModelError(f"transcription needs faster-whisper — {INSTALL_HINT}")
    if backend not in ("auto", "whisperx", "faster-whisper"):
        raise UsageError(f"unknown ASR backend '{backend}' — use auto, whisperx or faster-whisper")
    wave = _load_audio(audio)
    duration = wave.size / SAMPLE_RATE
    model_arg, _local = _resolve_model(model)
    code = _whisper_language(lang)
    items = None
    if backend in ("auto", "whisperx") and "whisperx" in backends:
        try:
            items = _run_whisperx(wave, model_arg, code, device, compute_type, beam_size)
        except Exception as e:
            if backend == "whisperx":
                msg = str(e).splitlines()[0] if str(e) else ""
                raise ModelError(f"whisperx failed ({type(e).__name__}: {msg}) — use the faster-whisper backend") from e
            log.info("whisperx unavailable (%s); using faster-whisper", e)
    elif backend == "whisperx":
        raise ModelError("whisperx is not installed — `pip install whisperx`, or use the faster-whisper backend")
    if items is None:
        items = _run_faster_whisper(wave, model_arg, code, device, compute_type, beam_size)
    return _words_to_segments(items, duration)


# --------------------------------------------------------------------------- output


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def format_srt(segments: Sequence[Segment]) -> str:
    """SRT text for timed segments (numbered from 1, one text line per cue)."""
    blocks = []
    for i, seg in enumerate(segments, 1):
        if seg.start is None or seg.end is None:
            raise ValueError(f"segment {i} has no timing: an SRT cue needs start and end")
        text = " ".join(seg.text.split())
        blocks.append(f"{i}\n{_srt_time(seg.start)} --> {_srt_time(seg.end)}\n{text}\n")
    return "\n".join(blocks)


def write_srt(segments: Sequence[Segment], path: str | Path) -> Path:
    """Write segments as UTF-8 SRT atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    data = format_srt(segments).encode("utf-8")
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e} — check the folder exists and is writable") from e
    return path
