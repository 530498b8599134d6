"""Scripts and phonemes: parse .txt/.srt/.vtt, phonemize with espeak, lay phoneme ids on the frame grid.

Phoneme vocabulary (``PHONEME_VOCAB``, fixed: a trained model's embedding rows follow this order,
so append only, never reorder):

- 0 ``<none>``: no speech in this frame; 1 ``<unk>``; 2 ``" "``: word boundary;
- single IPA characters (the fallback alphabet), then the multi-character phones espeak-ng emits for
  en-us, es, fr-fr, it, ru and de (measured on ~6000 dictionary words per language).
- Stress marks are folded away (espeak is run ``with_stress=False``): a stress mark would take an
  equal share of a span's frames like a phone, which distorts timing. Length marks stay part of
  the phone token (``iː`` is one symbol, distinct from ``i``). espeak's annotation characters
  ``"`` and ``^`` are dropped. A phone outside the vocabulary is split into the longest known
  pieces, character by character, and only then mapped to ``<unk>``.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vssflow_cli.errors import InputError, UsageError

WORD_BOUNDARY = " "

# fmt: off
PHONEME_VOCAB: list[str] = [
    "<none>", "<unk>", WORD_BOUNDARY,
    # single characters
    "a", "b", "c", "d", "e", "f", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t",
    "u", "v", "w", "x", "y", "z", "æ", "ç", "ð", "ø", "ħ", "ŋ", "œ", "ɐ", "ɑ", "ɒ", "ɔ", "ɕ", "ɖ",
    "ɘ", "ə", "ɚ", "ɛ", "ɜ", "ɝ", "ɟ", "ɡ", "ɢ", "ɣ", "ɤ", "ɥ", "ɦ", "ɨ", "ɪ", "ɫ", "ɬ", "ɭ", "ɯ",
    "ɰ", "ɱ", "ɲ", "ɳ", "ɵ", "ɸ", "ɹ", "ɺ", "ɻ", "ɽ", "ɾ", "ʀ", "ʁ", "ʂ", "ʃ", "ʈ", "ʉ", "ʊ", "ʋ",
    "ʌ", "ʍ", "ʎ", "ʏ", "ʐ", "ʑ", "ʒ", "ʔ", "ʕ", "ʝ", "ʰ", "ʲ", "ʷ", "ː", "ˑ", "\u0303", "\u0329",
    "β", "θ", "χ", "ᵻ",
    # multi-character phones
    "aɪ", "aɪə", "aɪɚ", "aʊ", "aː", "bʲ", "bː", "dz", "dzː", "dʒ", "dʒː", "dʲ", "dː", "eɪ", "eʊ",
    "eː", "fʲ", "iə", "iː", "ja", "ju", "kʲ", "kː", "mʲ", "nʲ", "n\u0329", "oɪ", "oʊ", "oː", "pf",
    "pʲ", "pː", "rʲ", "ss", "sʲ", "ts", "tsː", "tʃ", "tʃʲ", "tʃː", "tʲ", "tː", "uː", "vʲ", "yː",
    "øː", "œ\u0303", "ɑː", "ɑːɹ", "ɑ\u0303", "ɔø", "ɔɪ", "ɔː", "ɔːɹ", "ɔ\u0303", "əl", "əʊ", "ɛɹ",
    "ɛː", "ɛ\u0303", "ɜː", "ɡʲ", "ɡː", "ɪɹ", "ɪː", "ɭʲ", "ʊɐ", "ʊə", "ʊɹ",
    "lʲ", "zʲ", "xʲ", "ʃʲ", "ʒʲ", "lː", "mː", "nː", "rː", "sː", "fː", "vː", "ʃː", "ʎː", "ɲː",
]
# fmt: on
PHONEME_INDEX: dict[str, int] = {p: i for i, p in enumerate(PHONEME_VOCAB)}
NONE_ID, UNK_ID, BOUNDARY_ID = 0, 1, 2
_MAX_PHONE_LEN = max(len(p) for p in PHONEME_VOCAB[3:])
_ESPEAK_NOISE = str.maketrans("", "", '"^-')

SCRIPT_SUFFIXES = (".txt", ".srt", ".vtt")
MAX_SCRIPT_BYTES = 1_000_000  # ~15 hours of speech; anything bigger is not a script


@dataclass(frozen=True)
class Segment:
    """One utterance of a script; ``start``/``end`` in seconds, both None when the script is untimed."""

    start: float | None
    end: float | None
    text: str


# --------------------------------------------------------------------------- script parsing

_SRT_TIME = re.compile(r"^(\d{1,3}):([0-5]\d):([0-5]\d)[,.](\d{1,3})$")
_VTT_TIME = re.compile(r"^(?:(\d{1,3}):)?([0-5]\d):([0-5]\d)\.(\d{3})$")
_TAG = re.compile(r"<[^>\n]*>")  # <i>, </b>, <c.yellow>, <v Bob>, <00:00:01.000>
_SRT_BRACES = re.compile(r"\{\\[^}]*\}")  # {\an8} positioning codes


def parse_script(path: str | Path) -> list[Segment]:
    """Read a script: ``.txt`` (untimed paragraphs), ``.srt`` or ``.vtt`` (timed cues).

    Raises InputError naming the file and line for unreadable or malformed scripts.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SCRIPT_SUFFIXES:
        raise InputError(
            f"{path.name}: unsupported script type '{path.suffix or '(none)'}' — "
            "use a .txt, .srt or .vtt file"
        )
    raw = _read_script_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path.name}: not UTF-8 text (byte {e.start}) — re-save the script as UTF-8"
        ) from e
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if suffix == ".txt":
        segments = _parse_txt(lines)
    elif suffix == ".srt":
        segments = _parse_cues(lines, path.name, vtt=False)
    else:
        segments = _parse_cues(lines, path.name, vtt=True)
    if not segments:
        raise InputError(f"{path.name}: the script has no text — write the lines to speak into it")
    return segments


def _read_script_bytes(path: Path) -> bytes:
    """The file's bytes; InputError for a non-regular file (a device, FIFO or folder, also behind a
    symlink) or one over :data:`MAX_SCRIPT_BYTES`, so ``--text /dev/zero`` cannot read forever.

    Opened non-blocking (a FIFO without a writer would block the open) and checked with fstat on the
    open descriptor, so the file checked is the file read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputError(f"{path}: not a regular file — pass a .txt, .srt or .vtt script file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read(MAX_SCRIPT_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise InputError(f"cannot read script {path}: {e.strerror or e} — check the path") from e
    if len(raw) > MAX_SCRIPT_BYTES:
        limit = f"{MAX_SCRIPT_BYTES / 1e6:g} MB"
        raise InputError(f"{path}: script is over the {limit} limit — pass only the lines to speak")
    return raw


def _parse_txt(lines: list[str]) -> list[Segment]:
    paragraphs, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return [Segment(None, None, p) for p in paragraphs]


def _clean_cue_text(lines: list[str]) -> str:
    text = " ".join(line.strip() for line in lines)
    text = _SRT_BRACES.sub("", _TAG.sub("", text))
    text = html.unescape(text)
    return re.sub(r"\s+", " ", text).strip()


def _parse_time(token: str, vtt: bool, name: str, lineno: int) -> float:
    m = (_VTT_TIME if vtt else _SRT_TIME).match(token)
    if not m:
        expected = "[HH:]MM:SS.mmm" if vtt else "HH:MM:SS,mmm"
        raise InputError(f"{name} line {lineno}: bad timestamp '{token}' — expected {expected}")
    h, mnt, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mnt) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0


def _parse_timing(line: str, vtt: bool, name: str, lineno: int) -> tuple[float, float]:
    left, _, right = line.partition("-->")
    start_tok = left.strip()
    end_tok = right.strip().split()[0] if right.strip() else ""  # VTT cue settings follow the end
    start = _parse_time(start_tok, vtt, name, lineno)
    end = _parse_time(end_tok, vtt, name, lineno)
    if end <= start:
        raise InputError(
            f"{name} line {lineno}: cue ends ({end_tok}) before it starts ({start_tok}) — "
            "fix the cue's end time"
        )
    return start, end


def _parse_cues(lines: list[str], name: str, vtt: bool) -> list[Segment]:
    """SRT and WebVTT share one shape: blocks separated by blank lines, one ``-->`` line each."""
    i = 0
    if vtt:
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or not lines[i].strip().startswith("WEBVTT"):
            raise InputError(
                f"{name} line {i + 1}: missing 'WEBVTT' header — a .vtt file must start with WEBVTT"
            )
        i += 1
    blocks: list[tuple[int, list[str]]] = []  # (first line number, lines)
    current: list[str] = []
    first = 0
    for lineno in range(i, len(lines) + 1):
        line = lines[lineno] if lineno < len(lines) else ""
        if line.strip():
            if not current:
                first = lineno + 1
            current.append(line)
        elif current:
            blocks.append((first, current))
            current = []

    segments = []
    for first, block in blocks:
        head = block[0].strip()
        if vtt and (head.startswith("NOTE") or head in ("STYLE", "REGION")):
            continue
        if vtt and head.startswith("WEBVTT"):
            continue
        timing_at = next((k for k, line in enumerate(block[:2]) if "-->" in line), None)
        if timing_at is None:
            what = "cue" if vtt else f"cue '{head[:20]}'"
            fmt = "MM:SS.mmm --> MM:SS.mmm" if vtt else "HH:MM:SS,mmm --> HH:MM:SS,mmm"
            raise InputError(
                f"{name} line {first}: {what} has no timing line — "
                f"expected '{fmt}' after the cue number"
            )
        if not vtt and timing_at == 1 and not head.isdigit():
            raise InputError(
                f"{name} line {first}: bad cue number '{head[:20]}' — expected a number "
                "followed by a timing line"
            )
        start, end = _parse_timing(block[timing_at], vtt, name, first + timing_at)
        text = _clean_cue_text(block[timing_at + 1 :])
        if text:
            segments.append(Segment(start, end, text))
    return segments


# --------------------------------------------------------------------------- phonemes


def _setup_espeak() -> None:
    import espeakng_loader
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    EspeakWrapper.set_library(espeakng_loader.get_library_path())
    EspeakWrapper.set_data_path(espeakng_loader.get_data_path())


@functools.lru_cache(maxsize=1)
def espeak_languages() -> dict[str, str]:
    """Language codes espeak-ng knows, e.g. ``{'en-us': 'English (America)', ...}``."""
    _setup_espeak()
    from phonemizer.backend import EspeakBackend

    return dict(EspeakBackend.supported_languages())


def resolve_language(lang: str) -> str:
    """An espeak-ng language code for ``lang``: exact (``fr-fr``), or a bare code (``fr`` -> ``fr-fr``,
    ``en`` -> ``en-us``). Raises UsageError for unknown languages."""
    languages = espeak_languages()
    code = lang.strip().lower().replace("_", "-")
    if code in languages:
        return code
    preferred = {"en": "en-us", "pt": "pt-br"}.get(code, f"{code}-{code}")
    if preferred in languages:
        return preferred
    regional = sorted(c for c in languages if c.startswith(code + "-"))
    if regional:
        return regional[0]
    examples = ", ".join(c for c in ("en-us", "en-gb", "fr-fr", "es", "it", "de", "ru") if c in languages)
    raise UsageError(
        f"unknown language '{lang}' — use an espeak-ng voice code, e.g. {examples} ({len(languages)} available)"
    )


@functools.lru_cache(maxsize=8)
def _backend(lang: str):
    lang = resolve_language(lang)
    from phonemizer.backend import EspeakBackend

    quiet = logging.getLogger("vssflow.phonemizer")
    quiet.setLevel(logging.ERROR)
    return EspeakBackend(
        lang, with_stress=False, language_switch="remove-flags", preserve_punctuation=False, logger=quiet
    )


def phonemize(text: str, lang: str = "en-us") -> list[str]:
    """Phoneme symbols for ``text``; words are separated by ``WORD_BOUNDARY`` (" ")."""
    from phonemizer.separator import Separator

    backend = _backend(lang)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    out = backend.phonemize(lines, separator=Separator(phone=".", word=" ", syllable=""), strip=True)
    symbols: list[str] = []
    for line in out:
        for word in line.split():
            phones = [p.translate(_ESPEAK_NOISE) for p in word.split(".")]
            phones = [p for p in phones if p]
            if not phones:
                continue
            if symbols:
                symbols.append(WORD_BOUNDARY)
            symbols.extend(phones)
    return symbols


def _split_known(phone: str) -> list[int]:
    """Longest-match split of an unknown phone into vocabulary pieces; <unk> for what is left."""
    ids, i = [], 0
    while i < len(phone):
        for n in range(min(_MAX_PHONE_LEN, len(phone) - i), 0, -1):
            piece = phone[i : i + n]
            if piece in PHONEME_INDEX and PHONEME_INDEX[piece] > BOUNDARY_ID:
                ids.append(PHONEME_INDEX[piece])
                i += n
                break
        else:
            if not ids or ids[-1] != UNK_ID:
                ids.append(UNK_ID)
            i += 1
    return ids


def phoneme_ids(symbols: Iterable[str]) -> list[int]:
    """Map phoneme symbols to ``PHONEME_VOCAB`` indices (never 0: that id means 'no speech')."""
    ids: list[int] = []
    for s in symbols:
        if s in PHONEME_INDEX and PHONEME_INDEX[s] != NONE_ID:
            ids.append(PHONEME_INDEX[s])
        else:
            ids.extend(_split_known(s))
    return ids


def phoneme_track(
    spans: Sequence[tuple[float, float, Sequence[int]]], n_frames: int, fps: float = 25.0
) -> np.ndarray:
    """Phoneme id per frame, shape (n_frames,) int64; 0 outside every span.

    Each span's ids are stretched uniformly over frames ``[round(start*fps), round(end*fps))``:
    every phoneme gets an equal share of the span's frames (phonemes are dropped evenly when a
    span has fewer frames than phonemes). Frames past ``n_frames`` or before 0 are cut off
    without moving the rest. Later spans overwrite earlier ones where they overlap.
    """
    track = np.zeros(n_frames, dtype=np.int64)
    for start, end, ids in spans:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            continue
        if (ids <= 0).any():
            raise ValueError("phoneme ids must be >= 1 (0 means 'no speech')")
        f0, f1 = int(round(start * fps)), int(round(end * fps))
        length = f1 - f0
        if length <= 0:
            continue
        lo, hi = max(f0, 0), min(f1, n_frames)
        if hi <= lo:
            continue
        k = np.arange(lo, hi) - f0
        track[lo:hi] = ids[(k * ids.size) // length]
    return track


# --------------------------------------------------------------------------- placing text in time


def merge_spans(
    spans: Iterable[tuple[float, float]], max_gap: float = 0.0, min_len: float = 0.0
) -> list[tuple[float, float]]:
    """Union of spans, sorted; gaps up to ``max_gap`` s are bridged, spans shorter than ``min_len`` dropped."""
    out: list[list[float]] = []
    for s, e in sorted((float(s), float(e)) for s, e in spans if e > s):
        if out and s <= out[-1][1] + max_gap:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out if e - s >= min_len]


def _subtract(spans: list[tuple[float, float]], cut: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for s, e in spans:
        pieces = [(s, e)]
        for cs, ce in cut:
            nxt = []
            for ps, pe in pieces:
                if ce <= ps or cs >= pe:
                    nxt.append((ps, pe))
                    continue
                if cs > ps:
                    nxt.append((ps, cs))
                if ce < pe:
                    nxt.append((ce, pe))
            pieces = nxt
        out.extend(p for p in pieces if p[1] - p[0] > 1e-6)
    return out


def _distribute_words(texts: list[str], spans: list[tuple[float, float]]) -> list[tuple[float, float, str]]:
    """Spread the words of ``texts`` over ``spans`` in proportion to span length (by characters)."""
    if len(texts) == len(spans):
        return [(s, e, t) for (s, e), t in zip(spans, texts)]
    words = " ".join(texts).split()
    weights = np.array([len(w) + 1 for w in words], dtype=np.float64)
    mid = (np.cumsum(weights) - weights / 2) / weights.sum()  # word centre as a fraction of the text
    lengths = np.array([e - s for s, e in spans])
    bounds = np.cumsum(lengths) / lengths.sum()
    which = np.minimum(np.searchsorted(bounds, mid, side="right"), len(spans) - 1)
    which = _cut_at_phrase_ends(words, which)
    out = []
    for k, (s, e) in enumerate(spans):
        chosen = [w for w, j in zip(words, which) if j == k]
        if chosen:
            out.append((s, e, " ".join(chosen)))
    return out


SENTENCE_END, CLAUSE_END = ".!?", ",;:"


def _cut_at_phrase_ends(words: list[str], which: np.ndarray) -> np.ndarray:
    """Move each cut between spans (``which``: span index per word, non-decreasing) to a nearby sentence end, else a
    clause end, so the teacher reads whole phrases; a cut moves at most a third of the smaller neighbouring span."""
    which = which.copy()
    cuts = [i for i in range(1, len(words)) if which[i] != which[i - 1]]
    for c in cuts:
        left = int(np.sum(which == which[c - 1]))
        right = int(np.sum(which == which[c]))
        reach = min(left, right) // 3
        if reach == 0:
            continue
        lo, hi = max(1, c - reach), min(len(words) - 1, c + reach)
        for marks in (SENTENCE_END, CLAUSE_END):
            ends = [i for i in range(lo, hi + 1) if words[i - 1][-1:] in marks]
            if ends:
                best = min(ends, key=lambda i: (abs(i - c), i))
                if best < c:
                    which[best:c] = which[c]
                elif best > c:
                    which[c:best] = which[c - 1]
                break
    return which


def place_segments(
    segments: Sequence[Segment], duration: float, speaking_spans: Sequence[tuple[float, float]]
) -> list[tuple[float, float, str]]:
    """Give every segment a time span inside ``[0, duration]``; returns (start, end, text) sorted.

    Timed segments keep their times (clipped; dropped when fully outside). Untimed text is placed
    over ``speaking_spans`` (from lips/VAD) not already taken by timed segments: one paragraph per
    span when the counts match, else words spread in proportion to span length. With no speaking
    span the whole clip (minus timed segments) is used.
    """
    timed, untimed = [], []
    for seg in segments:
        if seg.start is None or seg.end is None:
            untimed.append(seg.text)
            continue
        s, e = max(0.0, seg.start), min(duration, seg.end)
        if e > s:
            timed.append((s, e, seg.text))
    placed = list(timed)
    if untimed:
        taken = [(s, e) for s, e, _ in timed]
        clipped = [(max(0.0, s), min(duration, e)) for s, e in speaking_spans]
        free = _subtract(merge_spans(clipped), taken)
        if not free:
            free = _subtract([(0.0, duration)], taken)
        if free:
            placed.extend(_distribute_words(untimed, free))
    return sorted(placed, key=lambda p: (p[0], p[1]))
