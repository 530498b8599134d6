"""media.py / mux.py against real ffmpeg on generated clips."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, audio_titles, files_in, make_clip, sha256, stream_durations, video_md5

from vssflow_cli import media, mux, output
from vssflow_cli.errors import EXIT_USAGE, ContainerError, InputError, OutputError

FRAME = 1 / 25


def test_probe_describes_clips(clip12: Path, clip4_silent: Path, clip_vfr: Path, clip_rotated: Path, clip_odd: Path):
    a = media.probe(clip12)
    assert (a.width, a.height, a.rotation, a.fps) == (160, 120, 0, 25.0)
    assert a.duration == pytest.approx(12.0, abs=FRAME)
    assert a.has_audio and a.audio_rate == 44100 and a.n_audio == 1 and not a.vfr
    s = media.probe(clip4_silent)
    assert not s.has_audio and s.audio_rate is None and s.duration == pytest.approx(4.0, abs=FRAME)
    v = media.probe(clip_vfr)
    assert v.vfr and v.duration == pytest.approx(6.0, abs=0.1)
    r = media.probe(clip_rotated)
    assert r.rotation == 90 and (r.width, r.height) == (120, 160)  # displayed size
    o = media.probe(clip_odd)
    assert (o.width, o.height, o.fps) == (99, 61, 24.0)


def _count(path: Path, **kw) -> tuple[int, tuple[int, ...]]:
    n, shape = 0, ()
    for chunk in media.iter_frames(path, **kw):
        assert chunk.dtype == np.uint8
        n, shape = n + len(chunk), chunk.shape[1:]
    return n, shape


@pytest.mark.parametrize("name, seconds", [("clip12", 12), ("clip_vfr", 6), ("clip_odd", 3), ("clip_rotated", 12)])
def test_iter_frames_resamples_to_25_fps(name: str, seconds: float, request: pytest.FixtureRequest):
    path = request.getfixturevalue(name)
    n, shape = _count(path, fps=25, width=64, height=48, chunk_frames=40)
    assert shape == (48, 64, 3)
    assert abs(n - seconds * 25) <= 2, n


def test_iter_frames_chunking_does_not_change_frames(clip4_silent: Path):
    big = np.concatenate(list(media.iter_frames(clip4_silent, fps=25, width=32, height=32, chunk_frames=1000)))
    small = list(media.iter_frames(clip4_silent, fps=25, width=32, height=32, chunk_frames=7))
    assert max(len(c) for c in small) == 7
    assert np.array_equal(big, np.concatenate(small))
    assert big.std() > 10  # a moving test pattern, not black frames


def test_iter_frames_applies_rotation(clip_rotated: Path, clip12: Path):
    w, h = media.display_size(media.probe(clip_rotated), 48)
    assert (w, h) == (48, 64)  # portrait as displayed
    rot = next(media.iter_frames(clip_rotated, fps=25, width=w, height=h, chunk_frames=1))[0]
    upright = next(media.iter_frames(clip12, fps=25, width=64, height=48, chunk_frames=1))[0]
    # rotating the displayed frame back gives the stored one (display matrix 90 = counter-clockwise)
    back = np.rot90(rot, k=-1)
    assert back.shape == upright.shape
    assert np.abs(back.astype(int) - upright).mean() < 12
    assert np.abs(np.rot90(rot, k=1).astype(int) - upright).mean() > np.abs(back.astype(int) - upright).mean()


def _ffmpeg_children() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and "ffmpeg" in stat.split(")")[0] and " Z " not in stat:
            out.append(int(d.name))
    return out


def test_closing_the_frame_stream_kills_ffmpeg(clip35: Path):
    frames = media.iter_frames(clip35, fps=25, width=32, height=32, chunk_frames=10)
    next(frames)
    assert _ffmpeg_children()
    frames.close()
    assert _ffmpeg_children() == []


def _children(ppid: int, marker: str) -> list[int]:
    """Live (not zombie) processes of parent ``ppid`` whose command line contains ``marker``."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().decode("utf-8", "replace")
        except (OSError, ValueError):
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == ppid and marker in cmd and state != "Z":
            out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_ffmpeg_dies_when_its_parent_is_killed(tmp_path: Path):
    """Issue 13.5: SIGKILL of vssflow (OOM killer, closed ssh session) must not leave ffmpeg writing."""
    out = tmp_path / "orphan-check.mkv"
    code = (
        "import sys\n"
        "from vssflow_cli.media import run_ffmpeg\n"
        "run_ffmpeg(['-re', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=25:duration=600', '-y',"
        " 'file:' + sys.argv[1]], what='long', hint='none')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", code, str(out)], env=env)
    children: list[int] = []
    try:
        deadline = time.time() + 60
        while not children and time.time() < deadline:
            assert parent.poll() is None, "the parent exited before starting ffmpeg"
            time.sleep(0.05)
            children = _children(parent.pid, str(out))
        assert children, "ffmpeg did not start"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 2
        while any(map(_alive, children)) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, children)), "ffmpeg outlived its parent"
    finally:
        parent.kill()
        for pid in filter(_alive, children):
            os.kill(pid, signal.SIGKILL)


def test_read_audio(clip12: Path, clip4_silent: Path):
    wave = media.read_audio(clip12, 16000)
    assert wave.dtype == np.float32 and abs(len(wave) - 12 * 16000) <= 1024
    spectrum = np.abs(np.fft.rfft(wave[:16000]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # the 440 Hz tone, 1 Hz bins
    with pytest.raises(InputError, match="no audio stream"):
        media.read_audio(clip4_silent)


@pytest.mark.parametrize(
    "content, match",
    [(b"", "empty file"), (b"hello, not a video\n" * 50, "not a readable video"), (None, "no such file")],
)
def test_probe_rejects_bad_files(tmp_path: Path, content: bytes | None, match: str):
    p = tmp_path / "bad.mp4"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        media.probe(p)


def test_names_are_never_options_or_protocols(tmp_path: Path, clip4_silent: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names, as a user types them; restored after the test
    for name in ("-y.mp4", "concat:x.mp4", "a b ünï.mp4", "-i"):
        p = tmp_path / name
        shutil.copy(clip4_silent, p)
        assert media.probe(name).duration == pytest.approx(4.0, abs=FRAME)
        assert sum(len(c) for c in media.iter_frames(name, fps=25, width=16, height=16)) == 100


# --------------------------------------------------------------------------- mux


@pytest.fixture
def tone(tmp_path: Path) -> Path:
    t = np.arange(int(10.3 * 16000)) / 16000  # deliberately not the video's length
    return mux.write_wav(tmp_path / "gen.wav", 0.3 * np.sin(2 * np.pi * 1000 * t), 16000)


@pytest.mark.parametrize("mix, n_audio", [("replace", 1), ("add", 1), ("keep", 2)])
def test_mux_copies_video_and_fits_audio(tmp_path: Path, clip12: Path, tone: Path, mix: str, n_audio: int):
    before = sha256(clip12)
    out = mux.mux(clip12, tone, tmp_path / "out.mp4", mix=mix)
    assert video_md5(out) == video_md5(clip12)
    d = stream_durations(out)
    assert len(d["audio"]) == n_audio
    for a in d["audio"]:
        assert abs(a - d["video"][0]) <= FRAME, d
    titles = audio_titles(out)
    assert "vssflow foley" in titles[-1]
    if mix == "add":  # the original tone (440 Hz) and the generated one (1 kHz) are both there
        spec = np.abs(np.fft.rfft(media.read_audio(out, 16000)[16000:32000]))
        assert spec[440] > 0.05 * spec.max() and spec[1000] > 0.05 * spec.max()
    assert sha256(clip12) == before
    assert files_in(tmp_path) == {"gen.wav", "out.mp4"}


def _audio_order(path: Path) -> list[tuple[str | None, bool]]:
    """(title, default disposition) of each audio stream, in stream order."""
    import av

    with av.open(str(path)) as c:
        return [(s.metadata.get("title") or s.metadata.get("handler_name"),
                 bool(s.disposition & av.stream.Disposition.default)) for s in c.streams.audio]  # fmt: skip


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".avi"])
def test_keep_puts_the_generated_track_first_only_when_asked(tmp_path: Path, clip12: Path, tone: Path, ext: str):
    """Issue 11.5: a dub's default keep puts the generated track first and default, the original second and not
    default; plain keep (foley, or --mix keep) keeps the original first and default."""
    src = clip12
    if ext == ".avi":  # an AVI input (same container: the original is copied, so its index must be right)
        from conftest import ffmpeg

        src = tmp_path / "in.avi"
        ffmpeg("-i", str(clip12), "-c:v", "mjpeg", "-c:a", "pcm_s16le", str(src))
    gen_first = mux.mux(src, tone, tmp_path / f"first{ext}", mix="keep", title="vssflow dub", generated_first=True)
    plain = mux.mux(src, tone, tmp_path / f"plain{ext}", mix="keep", title="vssflow dub")
    first, second = _audio_order(gen_first), _audio_order(plain)
    if ext != ".avi":  # AVI has neither titles nor dispositions: there the order is what a player goes by
        assert first[0] == ("vssflow dub", True) and first[1][0] != "vssflow dub" and not first[1][1], first
        assert second[0][1] and second[1] == ("vssflow dub", False), second
    # the tracks themselves: the original (440 Hz tone) and the generated one (1 kHz), in that order or reversed
    for path, gen_index in ((gen_first, 0), (plain, 1)):
        for i in range(2):
            pcm = subprocess.run([media.ffmpeg_exe(), "-v", "error", "-i", f"file:{path}", "-map", f"0:a:{i}",
                                  "-t", "1", "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
                                 check=True, capture_output=True).stdout  # fmt: skip
            peak = int(np.argmax(np.abs(np.fft.rfft(np.frombuffer(pcm, np.float32)[:16000]))))
            assert abs(peak - (1000 if i == gen_index else 440)) < 5, (path, i, peak)
    d = stream_durations(gen_first)
    assert len(d["audio"]) == 2 and all(abs(a - d["video"][0]) <= FRAME for a in d["audio"]), d
    mux.mux(src, tone, tmp_path / f"replace{ext}", mix="replace", generated_first=True)  # no effect outside keep
    assert len(_audio_order(tmp_path / f"replace{ext}")) == 1


def test_mux_without_original_audio_falls_back_to_replace(tmp_path: Path, clip4_silent: Path, tone: Path):
    out = mux.mux(clip4_silent, tone, tmp_path / "o.mp4", mix="keep")
    d = stream_durations(out)
    assert len(d["audio"]) == 1 and abs(d["audio"][0] - 4.0) <= FRAME


def test_mux_keeps_rotation(tmp_path: Path, clip_rotated: Path, tone: Path):
    out = mux.mux(clip_rotated, tone, tmp_path / "r.mp4")
    assert media.probe(out).rotation == 90
    assert video_md5(out) == video_md5(clip_rotated)


@pytest.mark.parametrize("ext", [".webm", ".mkv"])
def test_mux_other_containers(tmp_path: Path, clip_webm: Path, tone: Path, ext: str):
    out = mux.mux(clip_webm, tone, tmp_path / f"o{ext}", mix="keep")
    assert video_md5(out) == video_md5(clip_webm)
    d = stream_durations(out)
    assert len(d["audio"]) == 2
    assert all(abs(a - d["video"][0]) <= 0.1 for a in d["audio"]), d


def test_mux_failure_leaves_nothing(tmp_path: Path, clip12: Path, clip4_silent: Path, tone: Path):
    with pytest.raises(OutputError, match="cannot write"):
        mux.mux(clip12, clip4_silent, tmp_path / "o.mp4")  # the "generated track" has no audio stream
    with pytest.raises(ContainerError, match="cannot hold"):
        mux.mux(clip12, tone, tmp_path / "h264-in.webm")  # WebM cannot hold H.264: refused before ffmpeg runs
    assert files_in(tmp_path) == {"gen.wav"}


def _packet_times(path: Path, kind: str, n: int = 0) -> list[float]:
    """Presentation times (s) of every packet of the n-th ``kind`` stream, in presentation order."""
    import av

    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[n]
        return sorted(round(float(p.pts * p.time_base), 4) for p in c.demux(s) if p.pts is not None)


# One input per container, with the codecs cameras and editors write there.
_NATIVE = {
    ".mp4": ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
    ".mkv": ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
    ".mov": ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
    ".avi": ("-c:v", "mjpeg"),
}


@pytest.mark.parametrize("ext, rate", [(".mp4", 24), (".mkv", 24), (".mov", 24), (".avi", 24), (".avi", 10)])
def test_mux_keeps_every_packet_time(tmp_path: Path, tone: Path, ext: str, rate: int):
    """Issue 13.11: the same video packets are not enough, they must keep their times (AVI moved each
    frame one frame late), and a copied original track must keep its own (a kept PCM track was retimed)."""
    audio = ("-c:a", "pcm_s16le") if ext == ".avi" else ("-c:a", "aac")
    src = make_clip(tmp_path / f"cam{ext}", 3, rate=rate, video_args=_NATIVE[ext], audio_args=audio)
    video = _packet_times(src, "video")
    assert len(video) == 3 * rate
    for mix in ("replace", "keep", "add"):
        out = mux.mux(src, tone, tmp_path / f"out-{mix}{ext}", mix=mix)
        assert _packet_times(out, "video") == video, mix
        if mix == "keep":  # the original track is copied: its packets keep their times
            assert _packet_times(out, "audio", 0) == _packet_times(src, "audio", 0)
        d = stream_durations(out)
        assert all(abs(a - 3.0) <= FRAME for a in d["audio"] + d["video"]), (mix, d)


def test_atomic_output_cleans_up_on_any_exception(tmp_path: Path):
    final = tmp_path / "x.mp4"
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with output.atomic_output(final) as tmp:
                tmp.write_bytes(b"partial")
                assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name.startswith(".x.")
                raise exc()
        assert files_in(tmp_path) == set() and not output.live_temp_files()
    with output.atomic_output(final) as tmp:
        tmp.write_bytes(b"done")
    assert final.read_bytes() == b"done" and files_in(tmp_path) == {"x.mp4"}


def test_write_wav_is_exact_and_atomic(tmp_path: Path):
    import soundfile as sf

    p = mux.write_wav(tmp_path / "a.wav", np.linspace(-2, 2, 16001), 16000)
    data, sr = sf.read(p)
    assert sr == 16000 and len(data) == 16001 and data.max() <= 1.0
    assert files_in(tmp_path) == {"a.wav"}


def test_check_output_path(tmp_path: Path, clip4_silent: Path):
    existing = tmp_path / "e.mp4"
    existing.write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists"):
        output.check_output_path(existing, overwrite=False)
    assert output.check_output_path(existing, overwrite=True) == existing
    with pytest.raises(OutputError, match="does not exist"):
        output.check_output_path(tmp_path / "nope" / "o.mp4", overwrite=False)
    with pytest.raises(OutputError, match="replace the input"):
        output.check_output_path(clip4_silent, overwrite=True, inputs=(clip4_silent,))
    with pytest.raises(OutputError, match="is a folder"):
        output.check_output_path(tmp_path, overwrite=True)


def test_probe_rejects_audio_only_and_images(tmp_path: Path):
    from conftest import ffmpeg

    wav = tmp_path / "a.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(wav))
    with pytest.raises(InputError, match="no video stream"):
        media.probe(wav)
    png = tmp_path / "i.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32", "-frames:v", "1", str(png))
    with pytest.raises(InputError, match="still image"):
        media.probe(png)
    cover = tmp_path / "c.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-f", "lavfi", "-i", "testsrc2=size=32x32", "-map", "0", "-map", "1",
           "-frames:v", "1", "-c:v", "mjpeg", "-disposition:v", "attached_pic", str(cover))  # fmt: skip
    with pytest.raises(InputError, match="no video stream"):
        media.probe(cover)


def test_truncated_file_is_an_input_error(tmp_path: Path, clip12: Path):
    data = clip12.read_bytes()
    p = tmp_path / "t.mp4"
    p.write_bytes(data[: len(data) // 3])  # moov atom at the end is gone
    with pytest.raises(InputError):
        media.probe(p)
    q = make_clip(tmp_path / "fs.mp4", 4, audio=False, extra=("-movflags", "+faststart"))
    b = q.read_bytes()
    q.write_bytes(b[: len(b) // 2])  # index intact, half the frames missing
    info = media.probe(q)
    n = sum(len(c) for c in media.iter_frames(q, fps=25, width=16, height=16, stream_index=info.video_index))
    assert n < 0.9 * info.duration * 25  # the pipeline turns this into InputError (test_reliability)


# --------------------------------------------------------------------------- containers and subtitles


def test_unfit_container_is_refused_before_any_work(tmp_path: Path, clip12: Path):
    """Issue 13.12: `-o out.webm` for an H.264 input: exit 2 naming .webm and the extensions that fit."""
    info = media.probe(clip12)
    with pytest.raises(ContainerError) as e:
        mux.check_container(tmp_path / "out.webm", info)
    assert e.value.exit_code == EXIT_USAGE
    assert str(e.value) == (f"{tmp_path / 'out.webm'}: a .webm file cannot hold this h264 video (vssflow never "
                            "re-encodes the picture); name the output with one of .mp4 .m4v .mov .mkv .ts .m2ts .mts "
                            ".flv .3gp")  # fmt: skip
    mux.check_container(tmp_path / "out.mkv", info)
    mux.check_container(tmp_path / "out.wav", info)
    assert files_in(tmp_path) == set()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("codecs")
    return {
        "h264": make_clip(d / "h264.mp4", 1, size="64x48", audio=False),
        "mjpeg": make_clip(d / "mjpeg.avi", 1, size="64x48", audio=False, video_args=("-c:v", "mjpeg")),
        "vp8": make_clip(d / "vp8.webm", 1, size="64x48", audio=False,
                         video_args=("-c:v", "libvpx", "-deadline", "realtime")),  # fmt: skip
    }


@pytest.mark.parametrize("codec", ["h264", "mjpeg", "vp8"])
def test_container_table_matches_ffmpeg(tmp_path: Path, sources: dict[str, Path], tone: Path, codec: str):
    """The table of what each extension holds says yes exactly where ffmpeg writes a readable copy."""
    import av
    from conftest import ffmpeg

    src = sources[codec]
    info = media.probe(src)
    for ext in mux.VIDEO_EXTS:
        out = tmp_path / f"o{ext}"
        acodec, aargs = mux.AUDIO_CODECS[ext]
        try:
            ffmpeg("-i", str(src), "-i", str(tone), "-map", "0:v", "-map", "1:a", "-t", "1", "-c:v", "copy",
                   "-c:a", acodec, *aargs, str(out))  # fmt: skip
            with av.open(str(out)) as c:
                v = c.streams.video[0]
                written = v.codec_context.codec.canonical_name == codec and next(c.decode(v)) is not None
        except Exception:  # noqa: BLE001 - ffmpeg refused it, or wrote what cannot be read back
            written = False
        try:
            mux.check_container(out, info)
            allowed = True
        except ContainerError:
            allowed = False
        if (codec, ext) == ("h264", ".avi"):
            # AVI needs Annex B H.264; ffmpeg copies an MP4's length-prefixed packets into it and fails only
            # when one happens to look wrong ("use h264_mp4toannexb"), so the table refuses it
            written = False
        assert allowed == written, (codec, ext, written)
        out.unlink(missing_ok=True)


def _subtitle_texts(path: Path) -> tuple[list[str], list[str]]:
    """(codec, language) of each subtitle stream, and the text of every cue of the first one."""
    import av

    with av.open(str(path)) as c:
        streams = [f"{s.codec_context.codec.canonical_name}/{s.metadata.get('language')}" for s in c.streams.subtitles]
        texts = [sub.dialogue.decode() for sub in c.decode(c.streams.subtitles[0])] if c.streams.subtitles else []
    return streams, [t for t in texts if t]


@pytest.mark.parametrize("ext, kept", [(".mkv", "subrip/fra"), (".mp4", "mov_text/fra"), (".mov", "mov_text/fra")])
def test_mux_keeps_subtitles(tmp_path: Path, subtitled: Path, tone: Path, ext: str, kept: str):
    """Issue 13.13: subtitle streams stay (converted to mov_text for MP4/MOV), language included."""
    info = media.probe(subtitled)
    assert info.subtitles == ((2, "subrip"),)
    out = mux.mux(subtitled, tone, tmp_path / f"o{ext}", mix="keep", info=info)
    streams, texts = _subtitle_texts(out)
    assert streams == [kept]
    assert any("Bonjour" in t for t in texts) and any("Salut" in t for t in texts), texts
    assert mux.mux_warnings(out, info) == []


def test_mux_says_which_subtitles_it_leaves_out(tmp_path: Path, subtitled: Path, tone: Path):
    info = media.probe(subtitled)
    out = mux.mux(subtitled, tone, tmp_path / "o.avi", info=info)
    assert _subtitle_texts(out)[0] == []  # AVI holds no subtitles
    assert mux.mux_warnings(out, info) == [
        f"{out}: 1 subtitle stream (subrip) left out, .avi cannot hold it; write .mp4 or .mov or .mkv to keep it"
    ]
