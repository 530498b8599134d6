"""The teacher's cache of readings (real Kokoro): a line read before is not synthesised again."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vssflow_cli import teacher as T

pytestmark = pytest.mark.skipif(not T.available(), reason="the Kokoro teacher packages are not installed")

LINE = "The cache keeps this line."


class CountingSession:
    """Wraps the ONNX session and counts the graph runs."""

    def __init__(self, session) -> None:
        self.inner, self.runs = session, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.inner.run(*args, **kwargs)


@pytest.fixture(scope="module")
def model_path():
    return T.kokoro_model_path()  # joined into the real cache once


@pytest.fixture
def xdg(tmp_path, monkeypatch, model_path):
    """A fresh XDG cache with the joined model linked in (no 90 MB copy or re-join per test)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(T.NO_CACHE_ENV, raising=False)
    T._cache_root().mkdir(parents=True)
    (T._cache_root() / model_path.name).symlink_to(model_path)
    return tmp_path


def _teacher() -> tuple[T.KokoroTeacher, CountingSession]:
    t = T.KokoroTeacher(threads=1, cache=True)
    t._session = counter = CountingSession(t.session)
    return t, counter


def _entries() -> list:
    return sorted(T.readings_dir().glob("*/*.npy"))


def test_second_reading_comes_from_the_cache(xdg):
    t, counter = _teacher()
    first = t.speak(LINE, "en-us")
    assert first.dtype == np.float32 and first.size > 8000 and counter.runs == 1
    again = t.speak(LINE, "en-us")
    assert counter.runs == 1  # not synthesised again
    np.testing.assert_array_equal(again, first)
    # a new process (a new teacher) reads the file: the graph is not even loaded
    fresh = T.KokoroTeacher(threads=1, cache=True)
    np.testing.assert_array_equal(fresh.speak(LINE, "en-us"), first)
    assert fresh._session is None and fresh.cache_hits == 1


def test_sentences_are_cached_one_by_one(xdg):
    t, counter = _teacher()
    t.speak(f"{LINE} Something else entirely.", "en-us")
    assert counter.runs == 2 and len(_entries()) == 2
    t.speak(f"A new opening. {LINE}", "en-us")  # the repeated sentence hits, in another script
    assert counter.runs == 3 and len(_entries()) == 3


def test_other_voice_or_text_misses(xdg):
    t, counter = _teacher()
    base = t.speak(LINE, "en-us")
    t.speak(LINE, "en-us")
    assert counter.runs == 1  # the same line hits
    other_voice = t.speak(LINE, "en-us", voice="jf_alpha")
    assert counter.runs == 2 and not np.array_equal(other_voice, base)
    t.speak("The cache keeps that line.", "en-us")
    assert counter.runs == 3
    assert len({t.cache_key(LINE, "en-us", v, 0.25) for v in t.voices}) == len(t.voices)
    assert t.cache_key(LINE, "en-us", t.voice, 0.25) != t.cache_key(LINE, "en-us", t.voice, 0.3)


@pytest.mark.parametrize("damage", ["truncated", "float64", "2-d", "garbage"])
def test_corrupt_entry_is_ignored_and_rewritten(xdg, damage):
    t, counter = _teacher()
    first = t.speak(LINE, "en-us")
    [entry] = _entries()
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "float64":
        np.save(entry, first.astype(np.float64))
    elif damage == "2-d":
        np.save(entry, first.reshape(1, -1))
    else:
        entry.write_bytes(b"not an array")
    again = t.speak(LINE, "en-us")
    assert counter.runs == 2  # the damaged entry was a miss
    np.testing.assert_allclose(again, first, atol=1e-6)
    reread = np.load(entry, allow_pickle=False)  # and was rewritten whole
    assert reread.dtype == np.float32 and reread.shape == first.shape


def test_unwritable_cache_still_reads(xdg, caplog):
    T.readings_dir().write_text("a file where the readings folder should be")
    t, counter = _teacher()
    with caplog.at_level(logging.DEBUG, logger="vssflow.teacher"):
        first = t.speak(LINE, "en-us")
    assert first.size > 8000
    assert any("cannot write" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(t.speak(LINE, "en-us"), first)
    assert counter.runs == 2 and t.cache_misses == 2


def test_no_cache_env_bypasses(xdg, monkeypatch):
    monkeypatch.setenv(T.NO_CACHE_ENV, "1")
    t, counter = _teacher()
    t.speak(LINE, "en-us")
    t.speak(LINE, "en-us")
    assert counter.runs == 2 and not T.readings_dir().exists()
    monkeypatch.delenv(T.NO_CACHE_ENV)
    t.speak(LINE, "en-us")
    t.speak(LINE, "en-us")
    assert counter.runs == 3 and len(_entries()) == 1


def test_size_cap_drops_least_recently_used(tmp_path):
    import os

    cache = T.ReadingCache(tmp_path / "readings", max_bytes=11_000)
    wave = np.zeros(1000, np.float32)  # 4128 bytes as .npy
    for i, key in enumerate(["aa01", "bb02"]):
        cache.put(key, wave)
        os.utime(cache.path(key), (1000 + i, 1000 + i))
    assert cache.get("aa01") is not None  # used: now the newest
    cache.put("cc03", wave)  # 12.4 kB > 11 kB: pruned to 80 % of the cap
    assert cache.path("aa01").exists() and cache.path("cc03").exists()
    assert not cache.path("bb02").exists()
