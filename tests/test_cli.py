"""The vssflow command end to end: real ffmpeg, a real (small, untrained) ONNX bundle, real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, audio_titles, files_in, json_lines, sha256, stream_durations, video_md5

STAGES = {"decode", "features", "sampling", "decode_audio", "mux"}


def test_help_is_fast_and_imports_nothing_heavy(cli_env: dict[str, str]) -> None:
    code = "import sys, vssflow_cli.cli; print(sorted(m for m in ('numpy','torch','onnxruntime','mediapipe','av','phonemizer') if m in sys.modules))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    times = []
    for _ in range(3):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "vssflow_cli", "--help"], env=cli_env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        assert r.returncode == 0 and "foley" in r.stdout and "dub" in r.stdout
    print(f"vssflow --help: best {min(times):.3f} s of {[round(t, 3) for t in times]}")
    assert min(times) < 1.0


@pytest.mark.parametrize("name", ["clip12", "clip4_silent", "clip35"])
def test_foley_done_when(name: str, cli, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Issue 2: exit 0, video packets identical, audio as long as the video (0.15 s), stage timings."""
    clip = request.getfixturevalue(name)
    before = sha256(clip)
    out = tmp_path / "out.mp4"
    r = cli("foley", clip, "-o", out, "--steps", "1", "--json")
    assert r.returncode == 0, r.stderr
    (res,) = json_lines(r.stdout)
    assert res["status"] == "ok" and res["output"] == str(out)
    assert STAGES <= set(res["stages"]) and all(v >= 0 for v in res["stages"].values())
    assert video_md5(out) == video_md5(clip)
    d = stream_durations(out)
    assert d["audio"] and all(abs(a - d["video"][0]) <= 0.15 for a in d["audio"]), d
    assert sha256(clip) == before
    assert files_in(tmp_path) - {"sys-tmp/.ses"} == {"out.mp4", "sys-tmp"} and cli.leftover_tmp() == set()
    print(f"{name}: video {d['video'][0]:.3f} s, audio {[round(a, 3) for a in d['audio']]} s, "
          f"md5 equal, stages {res['stages']}, wall {res['wall']} s")  # fmt: skip


def test_default_mix_keeps_existing_sound(cli, tmp_path: Path, clip_short: Path, clip4_silent: Path) -> None:
    for clip, n_audio in ((clip_short, 2), (clip4_silent, 1)):
        local = tmp_path / clip.name
        shutil.copy(clip, local)
        r = cli("foley", local, "--steps", "1")
        assert r.returncode == 0, r.stderr
        out = local.with_name(f"{local.stem}.foley.mp4")  # default name, beside the input
        assert out.exists() and str(out) in r.stdout
        titles = audio_titles(out)
        assert len(titles) == n_audio and titles[-1] == "vssflow foley"


def test_foley_is_silent_where_nothing_moves(cli, tmp_path: Path) -> None:
    """A still picture with sensor noise gets silence, whatever the model makes of how it looks; the moving test
    pattern still gets sound (the small test model makes noise everywhere, so only the motion gate can silence)."""
    import numpy as np

    from vssflow_cli.media import ffmpeg_exe, read_audio

    still = tmp_path / "still.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "color=c=0x807060:size=160x120:rate=25:duration=3", "-vf", "noise=alls=6:allf=t",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(still)], check=True)  # fmt: skip
    moving = tmp_path / "moving.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=25:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(moving)], check=True)  # fmt: skip
    levels = {}
    for clip in (still, moving):
        out = tmp_path / f"{clip.stem}.wav"
        r = cli("foley", clip, "-o", out, "--wav", "--steps", "2")
        assert r.returncode == 0, r.stderr
        wave = read_audio(out, 16000)
        levels[clip.stem] = 20 * np.log10(np.sqrt(np.mean(np.square(wave, dtype=np.float64))) + 1e-10)
    assert levels["still"] < -60 < levels["moving"], levels


@pytest.mark.parametrize("mix, n_audio", [("replace", 1), ("add", 1), ("keep", 2)])
def test_mix_modes(cli, tmp_path: Path, clip_short: Path, mix: str, n_audio: int) -> None:
    out = tmp_path / f"{mix}.mkv"
    r = cli("foley", clip_short, "-o", out, "--mix", mix, "--steps", "1", "--gain-db", "-3")
    assert r.returncode == 0, r.stderr
    assert len(stream_durations(out)["audio"]) == n_audio
    assert video_md5(out) == video_md5(clip_short)


def test_wav_only_and_out_dir(cli, tmp_path: Path, clip_short: Path, clip_vfr: Path) -> None:
    import soundfile as sf

    from vssflow_cli.media import probe

    r = cli("foley", clip_short, clip_vfr, "--out-dir", tmp_path / "new" / "dir", "--wav", "--steps", "1")
    assert r.returncode == 0, r.stderr
    for clip in (clip_short, clip_vfr):
        wav = tmp_path / "new" / "dir" / f"{clip.stem}.foley.wav"
        info = sf.info(str(wav))
        assert info.samplerate == 16000 and info.frames == round(probe(clip).duration * 16000)
    r = cli("foley", clip_short, "-o", tmp_path / "x.wav", "--steps", "1")  # .wav implies --wav
    assert r.returncode == 0 and sf.info(str(tmp_path / "x.wav")).frames == 16000


def test_json_failure_objects_and_exit_codes(cli, tmp_path: Path, clip4_silent: Path) -> None:
    r = cli("foley", tmp_path / "missing.mp4", "--json")
    assert r.returncode == 3
    (obj,) = json_lines(r.stdout)
    assert obj["status"] == "failed" and obj["exit_code"] == 3 and "no such file" in obj["error"]
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vssflow: error:")


def test_weird_names(cli, tmp_path: Path, clip_short: Path) -> None:
    for name in ("-weird näme.mp4", "with space.mp4", "ünïcödé 日本.mp4"):
        shutil.copy(clip_short, tmp_path / name)
    r = cli("foley", "--steps", "1", "--", "-weird näme.mp4", "with space.mp4")
    assert r.returncode == 0, r.stderr
    r = cli("foley", "./ünïcödé 日本.mp4", "--steps", "1", "--wav")
    assert r.returncode == 0, r.stderr
    assert {"-weird näme.foley.mp4", "with space.foley.mp4", "ünïcödé 日本.foley.wav"} <= files_in(tmp_path)
    r = cli("foley", "-weird näme.mp4")  # without `--` it is an (unknown) option: one-line usage error
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_several_inputs_load_the_model_once(cli_env, tmp_path: Path, clip_short: Path, monkeypatch, capsys) -> None:
    from vssflow_cli import cli as cli_mod
    from vssflow_cli import pipeline

    calls = []
    real = pipeline.load_synthesizer
    monkeypatch.setattr(pipeline, "load_synthesizer", lambda opts: calls.append(1) or real(opts))
    monkeypatch.setenv("VSSFLOW_MODEL", cli_env["VSSFLOW_MODEL"])
    clips = []
    for i in range(3):
        clips.append(tmp_path / f"c{i}.mp4")
        shutil.copy(clip_short, clips[-1])
    code = cli_mod.run(["foley", *map(str, clips), "--steps", "1", "--json"])
    assert code == 0 and len(calls) == 1
    assert len(json_lines(capsys.readouterr().out)) == 3


def test_info_doctor_models(cli, clip_rotated: Path, test_bundle: Path, tmp_path: Path) -> None:
    r = cli("info", clip_rotated, "--json")
    assert r.returncode == 0
    (d,) = json_lines(r.stdout)
    assert d["rotation"] == 90 and d["width"] == 120 and d["has_audio"]
    r = cli("doctor", "--model", test_bundle, "--json")
    (doc,) = json_lines(r.stdout)
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert r.returncode == 0 and not failed, failed
    assert {"ffmpeg", "onnxruntime", "espeak (phonemizer)", "model bundle"} <= {c["name"] for c in doc["checks"]}
    r = cli("models", "verify", test_bundle)
    assert r.returncode == 0 and "verified" in r.stdout
    bad = tmp_path / "tampered"
    shutil.copytree(test_bundle, bad)
    with open(bad / "dit.onnx", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = cli("models", "verify", bad)
    assert r.returncode == 4 and "sha256" in r.stderr and r.stderr.count("\n") == 1
    r = cli("models", "list")
    assert r.returncode == 0 and "vssflow-tiny" in r.stdout


def test_info_names_channels_and_layout(tmp_path: Path, capsys) -> None:
    """Issue 13.18: `2 ch (stereo)`, `6 ch (5.1(side))`, never `x2`."""
    from conftest import make_clip

    from vssflow_cli import cli as cli_mod

    surround = make_clip(tmp_path / "surround.mkv", 1, size="64x48",
                         audio_args=("-af", "aformat=channel_layouts=5.1", "-c:a", "ac3"))  # fmt: skip
    stereo = make_clip(tmp_path / "stereo.mp4", 1, size="64x48", audio_args=("-ac", "2", "-c:a", "ac3"))
    assert cli_mod.run(["info", str(surround), str(stereo)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("audio ac3 44100 Hz 6 ch (5.1(side))"), lines
    assert lines[1].endswith("audio ac3 44100 Hz 2 ch (stereo)"), lines
    assert cli_mod.run(["info", str(stereo), "--json"]) == 0
    assert '"audio_layout": "stereo"' in capsys.readouterr().out


def test_subtitles_are_kept_or_reported(cli, tmp_path: Path, subtitled: Path) -> None:
    """Issue 13.13: kept in MKV; an AVI output cannot hold them, and the run says so (stderr and JSON)."""
    import av

    r = cli("foley", subtitled, "-o", tmp_path / "o.mkv", "--steps", "1")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert [s.metadata.get("language") for s in c.streams.subtitles] == ["fra"]
    r = cli("foley", subtitled, "-o", tmp_path / "o.avi", "--steps", "1", "--json")
    assert r.returncode == 0, r.stderr
    (res,) = json_lines(r.stdout)
    note = f"{tmp_path / 'o.avi'}: 1 subtitle stream (subrip) left out, .avi cannot hold it; write .mp4 or .mov or .mkv"
    assert res["warnings"] == [note + " to keep it"]
    assert r.stderr == f"vssflow: warning: {note} to keep it\n"


def test_dub_with_script(cli, tmp_path: Path, face_clip: Path) -> None:
    script = tmp_path / "script.txt"
    script.write_text("Hello there. This is a test of dubbing.\n", encoding="utf-8")
    out = tmp_path / "dub.mp4"
    r = cli("dub", face_clip, "--text", script, "-o", out, "--steps", "1", "--json", "--mix", "replace")
    assert r.returncode == 0, r.stderr
    (res,) = json_lines(r.stdout)
    assert res["task"] == "dub" and res["segments"] >= 1 and STAGES <= set(res["stages"])
    assert video_md5(out) == video_md5(face_clip)
    d = stream_durations(out)
    assert len(d["audio"]) == 1 and abs(d["audio"][0] - d["video"][0]) <= 0.15
    assert audio_titles(out) == ["vssflow dub"]


def test_dub_default_makes_the_speech_the_default_track(cli, tmp_path: Path, face_clip: Path) -> None:
    """Issue 11.5: with no --mix, a dub of a video with sound has the speech as its first, default audio track and
    the original as the second; the summary line says so. (Foley keeps the original first: the test above.)"""
    import av

    script = tmp_path / "script.txt"
    script.write_text("Hello there. This is a test of dubbing.\n", encoding="utf-8")
    out = tmp_path / "dub.mp4"
    r = cli("dub", face_clip, "--text", script, "-o", out, "--steps", "1")
    assert r.returncode == 0, r.stderr
    assert f"{out} (" in r.stdout and "; audio 1 vssflow dub (default), 2 original" in r.stdout, r.stdout
    with av.open(str(out)) as c:
        tracks = [(s.metadata.get("title") or s.metadata.get("handler_name"),
                   bool(s.disposition & av.stream.Disposition.default)) for s in c.streams.audio]  # fmt: skip
    assert len(tracks) == 2 and tracks[0] == ("vssflow dub", True), tracks
    assert tracks[1][0] != "vssflow dub" and not tracks[1][1], tracks
    d = stream_durations(out)
    assert all(abs(a - d["video"][0]) <= 0.15 for a in d["audio"]), d


def test_dub_warns_about_a_script_line_too_fast_for_its_cue(cli, tmp_path: Path, face_clip: Path) -> None:
    """Issue 11.5: > 6 words/s in a cue: one `vssflow: warning:` line on stderr, and the same text in --json."""
    script = tmp_path / "fast.srt"
    script.write_text("1\n00:00:01,000 --> 00:00:02,000\none two three four five six seven eight nine ten\n\n"
                      "2\n00:00:02,500 --> 00:00:03,500\nslow words\n", encoding="utf-8")  # fmt: skip
    r = cli("dub", face_clip, "--text", script, "-o", tmp_path / "d.wav", "--steps", "1", "--json")
    assert r.returncode == 0, r.stderr
    (res,) = json_lines(r.stdout)
    (warning,) = res["warnings"]
    assert warning.startswith("script line at 1.0-2.0 s has 10 words in 1.0 s (10.0 words/s, more than 6)"), warning
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("vssflow: warning: ")]
    assert lines == [f"vssflow: warning: {warning}"], r.stderr


def test_python_m_and_version(cli) -> None:
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("vssflow ")
    r = cli()
    assert r.returncode in (0, 2) and "foley" in (r.stdout + r.stderr)


def test_run_from_another_cwd(cli, clip_short: Path, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    r = cli("foley", os.path.relpath(clip_short, tmp_path / "sub"), "-o", "o.mp4", "--steps", "1",
            cwd=tmp_path / "sub")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sub" / "o.mp4").exists()
    assert REPO.exists()


def test_transcribe_and_dub_from_the_original_speech(cli, tmp_path: Path, face_clip: Path, tiny_whisper: Path) -> None:
    """Without --text, dub transcribes the original audio (a tiny offline Whisper that always says "hello world")."""
    from vssflow_cli.text import parse_script

    srt = tmp_path / "s.srt"
    r = cli("transcribe", face_clip, "-o", srt, "--asr-model", tiny_whisper, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    segs = parse_script(srt)
    assert segs and "hello" in " ".join(s.text for s in segs).lower()
    r = cli("dub", face_clip, "-o", tmp_path / "d.wav", "--asr-model", tiny_whisper, "--device", "cpu", "--steps", "1",
            "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    (res,) = json_lines(r.stdout)
    assert res["segments"] >= 1 and res["stages"]["transcribe"] > 0
    assert files_in(tmp_path) - {"sys-tmp/.ses"} == {"s.srt", "d.wav", "sys-tmp"}


def test_export_command(cli, tmp_path: Path, test_bundle: Path) -> None:
    r = cli("export", test_bundle / "checkpoint.safetensors", "--out", tmp_path / "exported")
    assert r.returncode == 0, r.stderr
    r = cli("models", "verify", tmp_path / "exported")
    assert r.returncode == 0 and "verified" in r.stdout
    assert (tmp_path / "exported" / "dit-int8.onnx").is_file()
    r = cli("export", test_bundle / "checkpoint.safetensors", "--out", tmp_path / "float", "--no-int8")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "float" / "dit-int8.onnx").exists() and (tmp_path / "float" / "dit.onnx").is_file()
    r = cli("export", test_bundle / "checkpoint.safetensors", "--out", tmp_path / "half", "--half-weights")
    assert r.returncode == 0, r.stderr
    assert cli("models", "verify", tmp_path / "half").returncode == 0
    full, half = (tmp_path / "exported" / "dit.onnx").stat().st_size, (tmp_path / "half" / "dit.onnx").stat().st_size
    assert half < 0.8 * full  # float16 weights (the tiny test graph: 0.76; the embedded DiT: 0.52)
    stored = json.loads((tmp_path / "half" / "manifest.json").read_text())["extra"]["dit_weights_stored"]
    assert stored["as"] == "fp16" and 0 < stored["rel_err_vs_fp32"] < 1e-2
    # the int8 graph is quantized from the float32 weights, before they were stored smaller: the same file
    assert (tmp_path / "half" / "dit-int8.onnx").read_bytes() == (tmp_path / "exported" / "dit-int8.onnx").read_bytes()


def test_precision_option(cli, tmp_path: Path, clip4_silent: Path, test_bundle: Path) -> None:
    runs = {}
    for precision in ("auto", "fp32", "int8"):
        out = tmp_path / f"{precision}.wav"
        r = cli("foley", clip4_silent, "-o", out, "--steps", "1", "--precision", precision, "--json")
        assert r.returncode == 0, r.stderr
        runs[precision] = json_lines(r.stdout)[0]["precision"]
    assert runs == {"auto": "int8", "fp32": "fp32", "int8": "int8"}  # the CPU default is the int8 graph
    r = cli("foley", clip4_silent, "-o", tmp_path / "x.wav", "--precision", "int4")
    assert r.returncode == 2 and "int4" in r.stderr
    # `vssflow bench` itself is exercised by tests/test_bench.py; here only its option checking
    r = cli("bench", "--seconds", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_train_and_data_build_take_typed_options(cli, tmp_path: Path) -> None:
    """`vssflow train` / `data build` call the typed functions: their checks and exit codes come through."""
    r = cli("train", "--corpus", tmp_path / "corpus", "--out", tmp_path / "run", "--config", "huge")
    assert r.returncode == 2 and "unknown preset" in r.stderr and "tiny" in r.stderr
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "index.jsonl").write_text("")
    r = cli("train", "--corpus", tmp_path / "corpus", "--out", tmp_path / "run", "--set", "depth=1", "--steps", "1")
    assert r.returncode == 3 and "no training clips" in r.stderr, r.stderr
    r = cli("data", "build", tmp_path / "c2", "--langs", "en,xx")
    assert r.returncode == 2 and "unknown language(s) ['xx']" in r.stderr


def test_dub_names_a_missing_script_before_an_existing_output(cli, tmp_path: Path, clip_short: Path) -> None:
    """Issue 13 item 16: inputs are validated before outputs."""
    local = tmp_path / clip_short.name
    shutil.copy(clip_short, local)
    local.with_name(f"{local.stem}.dub.mp4").write_bytes(b"an earlier dub")
    r = cli("dub", local, "--text", tmp_path / "missing.txt")
    assert r.returncode == 3, r.stderr
    assert "missing.txt" in r.stderr and "already exists" not in r.stderr


def test_result_line_is_labelled() -> None:
    """Issue 13 item 17: `79.5 s of video in 36.6 s, 0.46× real time`, not `(79.5 s, 36.6 s)`."""
    from vssflow_cli.batch import Item
    from vssflow_cli.console import result_line

    it = Item("clip.avi", "clip.foley.avi", "ok", result={"duration": 79.5, "wall": 36.6, "audio_tracks": ["a"]})
    assert result_line(it) == "clip.avi -> clip.foley.avi (79.5 s of video in 36.6 s, 0.46× real time)"


def test_progress_shows_time_left_where_a_stage_knows_its_total() -> None:
    """Issue 13 item 17: a stage with a total shows the time left once its speed is known; one without, none."""
    import io
    import re

    from rich.console import Console

    from vssflow_cli.console import StageProgress

    console = Console(file=io.StringIO(), width=140, color_system=None)
    now = [0.0]
    bars = StageProgress(console, "clip.mp4")
    bars.progress.get_time = lambda: now[0]
    for t, done in ((0, 1), (10, 2), (20, 3)):  # 0.1 windows/s, 7 of 10 to go: 70 s
        now[0] = t
        bars("sampling", done, 10)
        bars("decode", done * 25, None)
    console.print(bars.progress.get_renderable())
    lines = console.file.getvalue().splitlines()
    sampling, decode = (next(ln for ln in lines if stage in ln) for stage in ("sampling", "decode video"))
    assert re.search(r"0:01:10 left$", sampling.rstrip()), sampling
    assert "left" not in decode, decode


def test_help_shows_flags_as_flags_and_videos_as_video(capsys) -> None:
    """Issue 13 item 14: no `--wav <bool>`, `--json <bool>` or `<list[str]>` in the help."""
    import re

    from vssflow_cli import cli as cli_mod

    for command in (["foley"], ["dub"], ["info"], ["models", "pull"], []):
        assert cli_mod.run([*command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "<bool>" not in text and "list[" not in text, text
    assert cli_mod.run(["foley", "--help"]) == 0
    text = capsys.readouterr().out
    assert "Usage: vssflow foley [OPTIONS] [VIDEO...]" in text and "│   VIDEO... " in text, text
    for flag in ("--wav", "--json", "--overwrite", "--force", "--help"):
        assert re.search(rf"│ {flag}\s+(-h\s+)?[A-Z][a-z]", text), flag  # the help text follows the flag: no type


def test_wav_takes_no_value(cli, tmp_path: Path, clip_short: Path) -> None:
    """Issue 13 item 14: `--wav CLIP` is a flag then a video; `--wav true` names `true` (exit 2, before any work)."""
    shutil.copy(clip_short, tmp_path / "c.mp4")
    r = cli("foley", "--wav", "c.mp4", "--steps", "1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c.foley.wav").is_file()
    r = cli("foley", "c.mp4", "--wav", "true")
    assert r.returncode == 2 and r.stderr == ("vssflow: error: 'true' is not a file, and flags such as --wav take "
                                              "no value; drop 'true'\n"), r.stderr  # fmt: skip
    r = cli("foley", "c.mp4", "--wav=true")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not take a value" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--mix", "bogus"], "--mix 'bogus' is not one of replace, add, keep"),
    (["--mix=bogus"], "--mix 'bogus' is not one of replace, add, keep"),
    (["--device", "tpu"], "--device 'tpu' is not one of auto, cpu, cuda"),
    (["--steps", "0"], "--steps '0': must be >= 1"),
    (["--seed", "1.5"], "--seed '1.5': must be a valid integer"),
])  # fmt: skip
def test_option_errors_are_one_line_in_the_house_style(args: list[str], message: str, capsys) -> None:
    """Issue 13 item 15: not "Invalid value for '--mix': Value error, 'bogus' is not one of 'replace', ..."."""
    from vssflow_cli import cli as cli_mod

    assert cli_mod.run(["foley", "clip.mp4", *args]) == 2
    assert capsys.readouterr().err == f"vssflow: error: {message} (see `vssflow foley --help`)\n"
