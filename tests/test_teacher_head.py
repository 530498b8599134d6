"""The teacher's mel head (real Kokoro, real shipped head): the log-mel of a reading without the waveform generator."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vssflow_cli import teacher as T
from vssflow_cli.errors import ModelError

pytestmark = pytest.mark.skipif(
    not T.available() or T.find_head_dir() is None, reason="the Kokoro packages or weights/teacher-head are missing"
)

# not a line of the corpus the head was fitted on
LINE = "Please bring the blue umbrella when you visit the market tomorrow morning."


@pytest.fixture(scope="module")
def graphs():
    """The joined graph and the cut graph, built once into the real cache."""
    return T.kokoro_model_path(), T.kokoro_features_path()


@pytest.fixture
def xdg(tmp_path, monkeypatch, graphs):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    T._cache_root().mkdir(parents=True)
    for g in graphs:
        (T._cache_root() / g.name).symlink_to(g)
    return tmp_path


def test_cut_graph_is_the_pinned_one(graphs):
    full, cut = graphs
    assert cut is not None and cut.name.endswith("-features.onnx")
    assert T._sha256_file(cut) == T.KOKORO_FEATURES_SHA256
    assert cut.stat().st_size < full.stat().st_size


def test_head_reads_like_the_full_teacher(xdg):
    """The head's log-mel of an unseen line matches the log-mel of Kokoro's own waveform: same length within 6
    frames (trimmed on a predicted level), mean L1 under 0.6 nats (measured 0.34), and the loudness contour (the
    words' rhythm) correlates above 0.9."""
    from vssflow_cli.prior import teacher_logmel

    fast = T.KokoroTeacher(threads=2, head=True)
    assert fast.mel_head() is not None
    mel = fast.speak_logmel(LINE)
    ref = teacher_logmel(T.KokoroTeacher(threads=2).speak(LINE))
    assert mel.dtype == np.float32 and mel.shape[1] == ref.shape[1]
    assert abs(len(mel) - len(ref)) <= 6, (len(mel), len(ref))  # trimmed on a predicted level: within 60 ms
    n = min(len(mel), len(ref))
    l1 = float(np.abs(mel[:n] - ref[:n]).mean())
    contour = np.corrcoef(mel[:n].mean(1), ref[:n].mean(1))[0, 1]
    assert l1 < 0.6 and contour > 0.9, (l1, contour)


def test_without_head_the_full_graph_reads(xdg):
    from vssflow_cli.prior import teacher_logmel

    slow = T.KokoroTeacher(threads=2, head=False)
    assert slow.mel_head() is None
    np.testing.assert_allclose(slow.speak_logmel("Hello."), teacher_logmel(slow.speak("Hello.")))


def test_head_readings_are_cached_apart_from_waves(xdg):
    t = T.KokoroTeacher(threads=2, head=True, cache=True)
    wave, mel = t.speak("Cached twice."), t.speak_logmel("Cached twice.")
    assert wave.ndim == 1 and mel.ndim == 2 and t.cache_misses == 2
    again = T.KokoroTeacher(threads=2, head=True, cache=True).speak_logmel("Cached twice.")
    np.testing.assert_array_equal(again, mel)


def test_a_damaged_head_is_refused(tmp_path):
    src = T.find_head_dir()
    dst = tmp_path / "teacher-head"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    with open(dst / manifest["head"], "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    with pytest.raises(ModelError, match="sha256"):
        T.MelHead(dst)


def test_a_head_for_another_kokoro_is_refused(tmp_path):
    dst = tmp_path / "teacher-head"
    shutil.copytree(T.find_head_dir(), dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps({**manifest, "kokoro_sha256": "0" * 64}))
    with pytest.raises(ModelError, match="not a teacher head"):
        T.MelHead(dst)


def test_a_cancelled_read_ahead_stops_after_its_line(xdg):
    """A dub that fails (no face) cancels the script's read-ahead: at most the line being read is finished."""
    from vssflow_cli import pipeline

    T.get_teacher.cache_clear()
    teacher = T.get_teacher()
    words = ("one", "two", "three", "four", "five", "six", "seven", "eight")
    lines = [f"This is line {w} of a long script." for w in words]
    reading = pipeline._ReadAhead(lines, "en-us", fast=True)
    reading.cancel()
    reading.result()
    assert len(teacher._memo) <= 1
    pipeline._ReadAhead(lines[:2], "en-us", fast=True).result()
    assert len(teacher._memo) >= 2
    T.get_teacher.cache_clear()
