"""Scripts (.txt/.srt/.vtt), phonemes through the real espeak-ng, and phoneme tracks on the frame grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synth_speech import espeak_speech

from vssflow_cli.errors import InputError, UsageError
from vssflow_cli.text import (
    BOUNDARY_ID,
    PHONEME_VOCAB,
    UNK_ID,
    WORD_BOUNDARY,
    Segment,
    merge_spans,
    parse_script,
    phoneme_ids,
    phoneme_track,
    phonemize,
    place_segments,
)

SRT = (
    "\ufeff1\r\n"
    "00:00:01,000 --> 00:00:02,500\r\n"
    "<i>Bonjour</i> à tous,\r\n"
    "ça va&nbsp;?\r\n"
    "\r\n"
    "2\r\n"
    "00:00:03,200 --> 00:00:04,000\r\n"
    "{\\an8}Привет, мир!\r\n"
    "\r\n"
)

VTT = """WEBVTT - dialogue

NOTE a comment
that spans lines

intro
00:01.000 --> 00:02.000 align:start position:10%
<v Anna>Hello <b>there</b>,
general Kenobi.

00:00:02.500 --> 00:00:03.250
&lt;laughs&gt; well &amp; good
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


# --------------------------------------------------------------------------- parsing


def test_parse_srt_multiline_tags_bom_crlf_non_ascii(tmp_path):
    segs = parse_script(write(tmp_path, "script.srt", SRT))
    assert segs == [
        Segment(1.0, 2.5, "Bonjour à tous, ça va ?"),  # &nbsp; becomes a plain space
        Segment(3.2, 4.0, "Привет, мир!"),
    ]


def test_parse_vtt(tmp_path):
    segs = parse_script(write(tmp_path, "subs.vtt", VTT))
    assert segs == [
        Segment(1.0, 2.0, "Hello there, general Kenobi."),
        Segment(2.5, 3.25, "<laughs> well & good"),
    ]


def test_parse_txt_paragraphs_are_untimed_segments(tmp_path):
    p = write(tmp_path, "lines.txt", "\ufeffFirst line\r\ncontinues here.\r\n\r\n\r\n  Second paragraph. \n")
    assert parse_script(p) == [
        Segment(None, None, "First line continues here."),
        Segment(None, None, "Second paragraph."),
    ]


@pytest.mark.parametrize(
    "name, text, expected",
    [
        (
            "script.srt",
            "1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n00:00:0x,000 --> 00:00:04,000\nyo\n",
            "script.srt line 6: bad timestamp '00:00:0x,000' — expected HH:MM:SS,mmm",
        ),
        ("s.srt", "1\n00:00:03,000 --> 00:00:02,000\nhi\n", "s.srt line 2: cue ends (00:00:02,000) before it starts"),
        ("s.srt", "1\nhello\nworld\n", "s.srt line 1: cue '1' has no timing line"),
        ("s.vtt", "1\n00:01.000 --> 00:02.000\nhi\n", "s.vtt line 1: missing 'WEBVTT' header"),
        (
            "s.vtt",
            "WEBVTT\n\n00:01.000 --> 00:02,000\nhi\n",
            "s.vtt line 3: bad timestamp '00:02,000' — expected [HH:]MM:SS.mmm",
        ),
        ("s.txt", "\n  \n\n", "s.txt: the script has no text"),
        ("s.srt", "1\n00:00:01,000 --> 00:00:02,000\n<i></i>\n", "s.srt: the script has no text"),
        ("s.doc", "hello", "s.doc: unsupported script type '.doc'"),
    ],
)
def test_bad_scripts_give_one_line_input_errors(tmp_path, name, text, expected):
    with pytest.raises(InputError) as e:
        parse_script(write(tmp_path, name, text))
    msg = str(e.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg and "—" in msg  # problem — fix


def test_unreadable_and_non_utf8_scripts(tmp_path):
    with pytest.raises(InputError, match="cannot read script"):
        parse_script(tmp_path / "missing.srt")
    with pytest.raises(InputError, match="not UTF-8"):
        parse_script(write(tmp_path, "latin1.txt", "caf\xe9".encode("latin-1")))


_READ_IN_A_BOUNDED_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # unfixed code reads /dev/zero until this
from vssflow_cli.errors import InputError
from vssflow_cli.text import parse_script
try:
    parse_script(sys.argv[1])
    print(json.dumps({"error": None}))
except InputError as e:
    print(json.dumps({"error": str(e)}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no /dev/zero or FIFOs")
@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "fifo", "folder"])
def test_script_must_be_a_regular_file(tmp_path, kind):
    """Issue 13.10: `--text` naming a device, FIFO or folder is refused, never read without end."""
    p = tmp_path / "script.txt"
    if kind == "fifo":
        os.mkfifo(p)  # no writer: a plain open() would block forever
    elif kind == "folder":
        p.mkdir()
    else:
        p.symlink_to("/dev/zero")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _READ_IN_A_BOUNDED_CHILD, str(p)], env=env, capture_output=True,
                       text=True, timeout=20)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    msg = json.loads(r.stdout)["error"]
    assert msg == f"{p}: not a regular file — pass a .txt, .srt or .vtt script file"


def test_script_over_the_size_limit_is_refused(tmp_path):
    p = write(tmp_path, "long.txt", b"word " * 200_001)  # 1 000 005 bytes of valid text
    with pytest.raises(InputError) as e:
        parse_script(p)
    assert str(e.value) == f"{p}: script is over the 1 MB limit — pass only the lines to speak"
    assert parse_script(write(tmp_path, "ok.txt", b"word " * 199_999))  # just under: read as usual


# --------------------------------------------------------------------------- phonemes


def test_vocabulary_is_fixed_small_and_unique():
    assert PHONEME_VOCAB[:3] == ["<none>", "<unk>", " "]
    assert len(PHONEME_VOCAB) < 256 and len(set(PHONEME_VOCAB)) == len(PHONEME_VOCAB)


@pytest.mark.parametrize(
    "lang, text",
    [
        ("en-us", "The quick brown fox jumps over the lazy dog, thinking of measure and pleasure."),
        ("fr-fr", "Bonjour à tous, ça va ? Les enfants mangent un gâteau brûlé."),
        ("es", "El pingüino Wenceslao hizo kilómetros bajo exhaustiva lluvia y frío."),
        ("it", "Quel vituperabile xenofobo zelante assaggia il whisky ed esclama: alleluja!"),
        ("ru", "Съешь же ещё этих мягких французских булок, да выпей чаю."),
        ("de", "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich."),
    ],
)
def test_phonemize_languages_map_into_the_vocabulary(lang, text):
    symbols = phonemize(text, lang)
    words = len(text.split())
    assert symbols.count(WORD_BOUNDARY) >= words // 2  # espeak may fuse short words
    assert symbols[0] != WORD_BOUNDARY and symbols[-1] != WORD_BOUNDARY
    ids = phoneme_ids(symbols)
    assert UNK_ID not in ids and 0 not in ids
    assert ids.count(BOUNDARY_ID) == symbols.count(WORD_BOUNDARY)
    assert all(0 < i < len(PHONEME_VOCAB) for i in ids)


def test_phonemize_multiline_and_empty():
    one = phonemize("hello world")
    two = phonemize("hello\nworld")
    assert one == two == ["h", "ə", "l", "oʊ", " ", "w", "ɜː", "l", "d"]
    assert phonemize("  \n ") == []


def test_unknown_phone_splits_into_known_pieces():
    assert phoneme_ids(["tsʲ"]) == phoneme_ids(["ts", "ʲ"])
    assert phoneme_ids(["☃"]) == [UNK_ID]


def test_bare_language_codes_resolve():
    from vssflow_cli.text import resolve_language

    assert resolve_language("fr") == "fr-fr" and resolve_language("EN") == "en-us"
    assert resolve_language("en_GB") == "en-gb" and resolve_language("ru") == "ru"
    assert phonemize("bonjour", "fr") == phonemize("bonjour", "fr-fr")


def test_unknown_language_is_a_usage_error():
    with pytest.raises(UsageError) as e:
        phonemize("hello", "xx")
    assert "unknown language 'xx'" in str(e.value) and "en-us" in str(e.value)


def test_espeak_speech_is_real_audio():
    wave = espeak_speech("Hello there, how are you?", "en-us")
    assert wave.dtype == np.float32 and 0.8 < wave.size / 16000 < 4.0
    assert 0.05 < np.abs(wave).max() <= 1.0
    fr = espeak_speech("Bonjour à tous", "fr-fr")
    assert fr.size > 8000


# --------------------------------------------------------------------------- frame tracks


def test_phoneme_track_uniform_stretch_and_clipping():
    track = phoneme_track([(0.2, 0.6, [5, 6, 7, 8, 9])], n_frames=20, fps=25)  # frames 5..14 (10 frames)
    assert track.dtype == np.int64
    assert list(track[5:15]) == [5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
    assert not track[:5].any() and not track[15:].any()
    # a span past the end keeps its timing; its tail is cut
    cut = phoneme_track([(0.4, 1.2, [3, 4, 5, 6])], n_frames=25, fps=25)  # frames 10..29, 5 each
    assert list(cut[10:25]) == [3] * 5 + [4] * 5 + [5] * 5
    # more phonemes than frames: dropped evenly, order kept
    dense = phoneme_track([(0.0, 0.12, list(range(10, 30)))], n_frames=5, fps=25)
    assert list(dense[:3]) == sorted(dense[:3]) and dense[3:].sum() == 0
    with pytest.raises(ValueError):
        phoneme_track([(0.0, 1.0, [0, 3])], 25)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 60),
            st.integers(1, 30),
            st.lists(st.integers(3, 200), min_size=1, max_size=12, unique=True),
        ),
        max_size=4,
    ),
    st.integers(1, 80),
)
def test_phoneme_track_nonzero_exactly_inside_spans(raw, n_frames):
    # non-overlapping spans on the frame grid
    spans, t = [], 0
    for gap, length, ids in raw:
        start = t + gap
        spans.append((start / 25, (start + length) / 25, ids))
        t = start + length
    track = phoneme_track(spans, n_frames, fps=25)
    inside = np.zeros(n_frames, bool)
    for s, e, ids in spans:
        a, b = round(s * 25), round(e * 25)
        inside[a:min(b, n_frames)] = True
        seen = [int(x) for x in track[a:min(b, n_frames)]]
        assert all(x in ids for x in seen)
        order = [ids.index(x) for x in seen]
        assert order == sorted(order)  # phonemes keep their order
        if b - a >= len(ids) and b <= n_frames:
            assert set(seen) == set(ids)  # every phoneme gets frames
    assert np.array_equal(track != 0, inside)


def test_untimed_text_is_cut_between_spans_at_phrase_ends():
    text = "That is not a valid conference number. Please try again, or hang up and call us later."
    placed = place_segments([Segment(None, None, text)], 10.0, [(0.0, 3.3), (3.6, 10.0)])
    assert [t for _, _, t in placed] == ["That is not a valid conference number.",
                                         "Please try again, or hang up and call us later."]
    placed = place_segments([Segment(None, None, "one two three four, five six seven eight nine")], 10.0,
                            [(0.0, 4.0), (5.0, 9.0)])
    assert placed[0][2] == "one two three four,"  # no sentence end near: a clause end
    placed = place_segments([Segment(None, None, "alpha beta gamma delta. epsilon zeta eta theta iota kappa")], 10.0,
                            [(0.0, 1.0), (1.5, 9.0)])
    assert len(placed) == 2 and placed[0][2] == "alpha"  # one or two words beside a cut: too few to move it


def test_place_segments_timed_untimed_and_fallback():
    timed = [Segment(1.0, 2.0, "a"), Segment(4.5, 7.0, "b"), Segment(9.0, 10.0, "gone")]
    assert place_segments(timed, 6.0, []) == [(1.0, 2.0, "a"), (4.5, 6.0, "b")]
    one = [Segment(None, None, "hello there friend")]
    assert place_segments(one, 5.0, [(1.2, 3.4)]) == [(1.2, 3.4, "hello there friend")]
    assert place_segments(one, 5.0, []) == [(0.0, 5.0, "hello there friend")]
    paras = [Segment(None, None, "first part"), Segment(None, None, "second part")]
    assert place_segments(paras, 8.0, [(5.0, 7.0), (0.5, 2.0)]) == [(0.5, 2.0, "first part"), (5.0, 7.0, "second part")]
    # one paragraph over two spans: words split by span length, in order
    placed = place_segments([Segment(None, None, "one two three four five six")], 10.0, [(0.0, 3.0), (6.0, 9.0)])
    assert [p[:2] for p in placed] == [(0.0, 3.0), (6.0, 9.0)]
    assert " ".join(p[2] for p in placed) == "one two three four five six"
    assert placed[0][2] == "one two three"
    assert merge_spans([(2, 3), (0, 1), (1.1, 1.5), (2.5, 2.6)], max_gap=0.2) == [(0, 1.5), (2, 3)]


def test_srt_to_phoneme_track_end_to_end(tmp_path):
    segs = parse_script(write(tmp_path, "fr.srt", SRT))
    fps, n = 25, 125
    placed = place_segments(segs, n / fps, [])
    langs = ["fr-fr", "ru"]
    spans = [(s, e, phoneme_ids(phonemize(text, lang))) for (s, e, text), lang in zip(placed, langs)]
    track = phoneme_track(spans, n, fps)
    nonzero = np.flatnonzero(track)
    expected = np.r_[25:62, 80:100]  # 1.0-2.5 s and 3.2-4.0 s
    assert np.array_equal(nonzero, expected)
    assert track[25] == spans[0][2][0] and track[61] == spans[0][2][-1]
    assert track[80] == spans[1][2][0] and track[99] == spans[1][2][-1]
