"""Transcript files: SRT, WebVTT (with each word's start as an inline timestamp) and plain text.

All three read back with :func:`vssflow_cli.text.parse_script`, so a transcript is a ``dub --text``
script: SRT/VTT keep the cue times (VTT's inline ``<00:00:01.200>`` word tags are dropped on
reading), TXT is one untimed paragraph per cue.
"""

from __future__ import annotations

from collections.abc import Sequence

from vssflow_cli.text import Segment

Word = tuple[float, float, str]
SUFFIXES = (".srt", ".vtt", ".txt")


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


def _vtt_time(t: float) -> str:
    return _srt_time(t).replace(",", ".")


def _cue_text(seg: Segment, words: Sequence[Word]) -> str:
    """The cue's text with ``<time>`` before each word after the first, if the words spell the cue."""
    assert seg.start is not None and seg.end is not None
    text = " ".join(seg.text.split())
    inside = [w for w in words if seg.start - 1e-3 <= w[0] < seg.end]
    if not inside or " ".join(w[2] for w in inside) != text:
        return text  # words clipped or merged differently: keep the cue plain rather than guess
    parts, last = [inside[0][2]], seg.start
    for start, _end, word in inside[1:]:
        if last < start < seg.end:  # a timestamp tag must lie strictly inside the cue, increasing
            parts.append(f"<{_vtt_time(start)}>{word}")
            last = start
        else:
            parts.append(word)
    return " ".join(parts)


def format_vtt(segments: Sequence[Segment], words: Sequence[Word] = ()) -> str:
    """WebVTT for timed segments; ``words`` (start, end, text) add inline word timestamps."""
    blocks = ["WEBVTT\n"]
    for i, seg in enumerate(segments, 1):
        if seg.start is None or seg.end is None:
            raise ValueError(f"segment {i} has no timing: a WebVTT cue needs start and end")
        blocks.append(f"{_vtt_time(seg.start)} --> {_vtt_time(seg.end)}\n{_cue_text(seg, words)}\n")
    return "\n".join(blocks)


def format_txt(segments: Sequence[Segment]) -> str:
    """Plain text: one paragraph per segment, blank lines between."""
    return "".join(" ".join(seg.text.split()) + "\n\n" for seg in segments).rstrip("\n") + "\n"


def format_transcript(segments: Sequence[Segment], suffix: str, words: Sequence[Word] = ()) -> str:
    """The file text for ``suffix`` (.srt, .vtt or .txt); ValueError for another suffix."""
    suffix = suffix.lower()
    if suffix == ".srt":
        return format_srt(segments)
    if suffix == ".vtt":
        return format_vtt(segments, words)
    if suffix == ".txt":
        return format_txt(segments)
    raise ValueError(f"no transcript format for '{suffix}'; use one of {', '.join(SUFFIXES)}")
