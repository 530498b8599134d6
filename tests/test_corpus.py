"""Corpus builder: onsets, rendering, licences, split, and the whole per-recording pipeline on real files.

The end-to-end test builds clips from recordings made here (espeak-ng speech, click trains written as .wav) with
the real ffmpeg, mediapipe face mesh and phonemizer. A second test runs the same pipeline on real Debian
recordings when they are already unpacked (``$VSSFLOW_CORPUS_DIR``, default /work/corpus); it never downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from safetensors import safe_open
from safetensors.numpy import load_file

from vssflow_cli.train import corpus as C
from vssflow_cli.train import render as R
from vssflow_cli.train.onsets import detect_onsets
from vssflow_cli.train.sources import Recording, clean_transcript, parse_copyright, ufoai_category
from vssflow_cli.vision import visual_features

SR = 16000


def _clicks(times: list[float], dur: float, amp: float = 0.5, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, noise, int(dur * SR)).astype(np.float32)
    n = np.arange(2000)
    for t in times:
        i = int(t * SR)
        w[i : i + 2000] += (amp * rng.normal(0, 1, 2000) * np.exp(-n / 300)).astype(np.float32)[: len(w) - i]
    return w


def _test_source_name(prefix: str) -> str:
    """A source path that the split hash puts in 'test'."""
    for i in range(1000):
        name = f"{prefix}{i}.wav"
        if int(hashlib.sha1(name.encode()).hexdigest(), 16) % 20 == 0:
            return name
    raise AssertionError("no test-split name found")


# ------------------------------------------------------------------------------------------- small units


def test_detect_onsets_finds_clicks_and_ignores_stationary_noise():
    times = [0.3, 0.9, 1.25, 2.0, 2.6]
    for amp in (0.5, 0.05):
        got = detect_onsets(_clicks(times, 3.0, amp), SR)
        assert len(got) == len(times)
        assert np.max(np.abs(got - np.array(times))) <= 0.02
    noise = np.random.default_rng(1).normal(0, 0.1, 3 * SR).astype(np.float32)
    assert len(detect_onsets(noise, SR)) == 0
    assert len(detect_onsets(np.zeros(SR, np.float32), SR)) == 0


def test_trim_and_normalise():
    w = np.zeros(2 * SR, np.float32)
    w[SR // 2 : SR] = 0.01 * np.sin(2 * np.pi * 440 * np.arange(SR // 2) / SR)
    lo, hi = C.trim_bounds(w, pad_s=0.05)
    assert abs(lo - (SR // 2 - 800)) <= 160 and abs(hi - (SR + 800)) <= 160
    out = C.normalise(w[lo:hi])
    assert abs(C.active_rms_db(out) - C.TARGET_RMS_DB) < 0.5
    spiky = np.zeros(SR, np.float32)
    spiky[::1000] = 1.0
    spiky += 0.001
    assert np.abs(C.normalise(spiky)).max() <= C.PEAK_LIMIT + 1e-6


def test_split_is_stable_and_about_five_percent():
    names = [f"usr/share/sounds/{i}.ogg" for i in range(4000)]
    splits = [C.split_of(n) for n in names]
    assert splits == [C.split_of(n) for n in names]
    frac = splits.count("test") / len(names)
    assert 0.035 < frac < 0.065


def test_copyright_last_matching_stanza_wins_and_fallback():
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2002 Someone\nLicense: GPL-2+\n\n"
        "Files:\n base/sound/footsteps/*.ogg\n base/music/a.ogg\nCopyright: X\nLicense: CC-BY-3.0\n"
        " full text line\n\n"
        "Files: debian/*\nLicense: GPL-2+\n"
    )
    cr = parse_copyright(text)
    assert cr.licence_for("base/sound/footsteps/wood1.ogg") == "CC-BY-3.0"
    assert cr.licence_for("base/sound/doors/door1.ogg") == "GPL-2+"
    assert cr.licences == ["CC-BY-3.0", "GPL-2+"]
    assert parse_copyright("This package was debianized by ...", "GPL-2+").licence_for("any") == "GPL-2+"


def test_transcripts_and_categories():
    assert clean_transcript("[ascending tones]", "en") == ""
    assert clean_transcript("Press * then # (pause)", "en") == "Press star then pound"
    assert clean_transcript("Appuyez sur *", "fr") == ""
    assert clean_transcript("Voce disattivata. (You are now muted.)", "it") == "Voce disattivata."
    assert ufoai_category("sound/footsteps/wood3.ogg") == "footsteps/wood"
    assert ufoai_category("sound/misc/breakglass04.ogg") == "break/glass"
    assert ufoai_category("sound/doors/door2-open.ogg") == "door/open"


def test_category_looks_alike_and_categories_differ():
    a1, a2 = R.category_texture("door/open", 64), R.category_texture("door/open", 64)
    b = R.category_texture("footsteps/wood", 64)
    assert np.array_equal(a1, a2)
    assert np.abs(a1 - b).mean() > 0.02
    assert R.category_sprite("door/open", 20).shape == (24, 24, 4)


def test_rendered_impacts_are_visible_at_onset_frames():
    times = [0.5, 1.3, 2.1]
    wave = _clicks(times, 3.0)
    n = 75
    frames = R.render_sound_video(wave, SR, np.array(times), "impact/test", n, clip_seed=7)
    assert frames.shape == (n, 128, 128, 3) and frames.dtype == np.uint8
    again = R.render_sound_video(wave, SR, np.array(times), "impact/test", n, clip_seed=7)
    assert np.array_equal(frames, again)
    _, sync = visual_features(frames)
    energy = sync[:, 16]
    hits = [int(t * 25) for t in times]
    quiet = np.delete(energy, [h + d for h in hits for d in range(-4, 6)])
    for h in hits:  # the impact frame (or the next) moves far more than the drifting background
        assert energy[h : h + 2].max() > 3 * np.median(quiet) + 0.05


def test_speech_apertures_follow_envelope():
    t = np.arange(2 * SR) / SR
    env = np.clip(np.sin(2 * np.pi * 2 * t), 0, None)  # 4 syllables
    wave = (0.2 * env * np.random.default_rng(0).normal(0, 1, t.size)).astype(np.float32)
    ap = R.speech_apertures(wave, SR, 50, lead_frames=0)
    ref = np.array([env[int((k + 0.5) * 640)] for k in range(50)])
    assert np.corrcoef(ap, ref)[0, 1] > 0.85
    assert ap.min() >= 0 and ap.max() <= 1 and ap.max() > 0.9


# ------------------------------------------------------------------------------------------- end to end


def _rec(path: Path, kind: str, source_file: str, **kw) -> Recording:
    return Recording(
        rec_id=kw.pop("rec_id"),
        kind=kind,
        path=path,
        package="test-pkg",
        version="1",
        source_file=source_file,
        licence="CC0-1.0",
        **kw,
    )


def test_pipeline_writes_aligned_clips_heldout_files_and_skips_finished(tmp_path):
    from synth_speech import espeak_speech

    src = tmp_path / "src"
    src.mkdir()
    speech = np.concatenate(
        [
            np.zeros(SR // 2, np.float32),
            espeak_speech("hello there, good morning", "en-us"),
            np.zeros(SR // 2, np.float32),
        ]
    )
    sf.write(src / "hello.wav", 0.5 * speech, SR)
    sf.write(src / "steps.wav", _clicks([0.2, 0.7, 1.1], 1.5), SR)
    long = np.concatenate([_clicks([0.5 + 0.8 * i for i in range(10)], 8.2, seed=3)])
    sf.write(src / "long.wav", long, SR)

    root = tmp_path / "corpus"
    speech_src = _test_source_name("speech/hello")  # held out: exercises the mp4/json/txt outputs
    recs = [
        _rec(src / "hello.wav", "speech", speech_src, rec_id="t-hello", lang="en", text="hello there, good morning"),
        _rec(src / "steps.wav", "sound", _test_source_name("sound/steps"), rec_id="t-steps", category="footsteps/wood"),
        _rec(src / "long.wav", "sound", "sound/long.wav", rec_id="t-long", category="city/industry"),
    ]
    records = [C.process_recording(root, r) for r in recs]
    assert [len(r["rows"]) for r in records] == [1, 1, 2]  # 8.2 s of sound -> two pieces of <= 5 s

    # speech: aligned lengths, phonemes only over the voiced span, lips track the rendered mouth
    t = load_file(str(root / "clips" / "t-hello.safetensors"))
    n = len(t["phonemes"])
    assert t["wave"].shape == (n * 640,) and t["wave"].dtype == np.float32
    assert t["video"].shape == (n, 208) and t["sync"].shape == (n, 18) and t["lip"].shape == (n, 8)
    assert t["phonemes"].dtype == np.int64 and n <= 125
    with safe_open(str(root / "clips" / "t-hello.safetensors"), "np") as f:
        meta = f.metadata()
    assert meta["kind"] == "speech" and meta["split"] == "test" and meta["licence"] == "CC0-1.0"
    v0, v1 = float(meta["voiced_start"]), float(meta["voiced_end"])
    voiced = np.flatnonzero(t["phonemes"])
    assert voiced.size > 10 and voiced[0] >= int(v0 * 25) - 1 and voiced[-1] <= int(v1 * 25) + 1
    assert t["lip"][:, 0].mean() > 0.9  # face found in (nearly) every frame
    corr = np.corrcoef(t["apertures"], t["lip"][:, 1])[0, 1]
    assert corr > 0.8, corr
    assert abs(C.active_rms_db(t["wave"]) - C.TARGET_RMS_DB) < 1.5

    # sound: onsets inside the clip, shifted by the lead-in silence; lips zero
    s = load_file(str(root / "clips" / "t-steps-c0.safetensors"))
    assert s["lip"].sum() == 0 and not s["phonemes"].any()
    assert len(s["onsets"]) == 3
    lead = s["onsets"][0] - 0.2 + 0.05  # trimming kept 50 ms before the first click
    assert 0.1 < lead < 0.7
    assert np.allclose(np.diff(s["onsets"]), [0.5, 0.4], atol=0.02)
    long0 = load_file(str(root / "clips" / "t-long-c0.safetensors"))
    assert len(long0["phonemes"]) == 125

    # held-out files: a playable H.264/AAC mp4 with every frame, transcript, and what was drawn
    held = root / "heldout"
    assert (held / "t-hello.txt").read_text().strip() == "hello there, good morning"
    info = json.loads((held / "t-hello.json").read_text())
    assert info["kind"] == "speech" and len(info["apertures"]) == n
    steps_info = json.loads((held / "t-steps-c0.json").read_text())
    assert np.allclose(steps_info["onsets"], s["onsets"], atol=1e-3)
    import av

    with av.open(str(held / "t-hello.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == n

    # re-running skips finished recordings and gives the same rows
    mtime = (root / "clips" / "t-hello.safetensors").stat().st_mtime_ns
    assert [C.process_recording(root, r) for r in recs] == records
    assert (root / "clips" / "t-hello.safetensors").stat().st_mtime_ns == mtime
    assert not list(root.rglob("*.part"))


def test_build_order_puts_english_speech_and_mixed_sounds_first():
    def r(i, kind, lang="", cat=""):
        return Recording(f"r{i}", kind, Path("x"), "p", "1", f"f{i}", "L", lang=lang, category=cat)

    speech = {"en": [r(0, "speech", "en"), r(1, "speech", "en")], "fr": [r(2, "speech", "fr")]}
    sounds = [r(3, "sound", cat="a"), r(4, "sound", cat="a"), r(5, "sound", cat="b")]
    order = C.build_order(speech, sounds, [r(6, "speech", "ru")])
    assert [x.rec_id for x in order][:2] == ["r0", order[1].rec_id] and order[1].kind == "sound"
    assert {order[1].category, order[3].category} == {"a", "b"}  # round-robin over categories
    assert order[-1].rec_id == "r6" and order[-2].rec_id == "r2"


CORPUS_DIR = Path(os.environ.get("VSSFLOW_CORPUS_DIR", "/work/corpus"))


@pytest.mark.skipif(
    not (CORPUS_DIR / "unpacked" / "ufoai-sound" / ".unpacked").exists(),
    reason="Debian sources not unpacked here (run python -m vssflow_cli.train.corpus DIR first)",
)
def test_real_debian_recordings(tmp_path):
    from vssflow_cli.train import sources

    pkgs = {}
    for name in ("asterisk-core-sounds-en", "asterisk-core-sounds-en-g722", "ufoai-sound"):
        root = CORPUS_DIR / "unpacked" / name
        pkgs[name] = sources.Package(name, (root / ".unpacked").read_text().strip(), Path("/dev/null"), root)
    speech = {r.rec_id: r for r in sources.asterisk_recordings(pkgs, "en")}
    sounds = {r.rec_id: r for r in sources.ufoai_recordings(pkgs, CORPUS_DIR)}
    assert len(speech) > 500 and speech["ast-en-vm-deleted"].text == "Message deleted."
    assert speech["ast-en-vm-deleted"].licence == "CC-BY-SA-3.0"
    for rec in (speech["ast-en-vm-deleted"], sounds["ufo-footsteps-wood1"]):
        out = C.process_recording(tmp_path, rec)
        assert len(out["rows"]) == 1, out
    t = load_file(str(tmp_path / "clips" / "ast-en-vm-deleted.safetensors"))
    assert np.corrcoef(t["apertures"], t["lip"][:, 1])[0, 1] > 0.8
    assert t["phonemes"].any()
    s = load_file(str(tmp_path / "clips" / "ufo-footsteps-wood1-c0.safetensors"))
    assert len(s["onsets"]) >= 1
