"""Shared fixtures: real clips made with ffmpeg's lavfi sources, a small real model bundle, a CLI runner.

Clips are generated once per session (a few seconds in all). The bundle is an untrained, small
VSSFlowDiT exported to ONNX through the real export path (``train.untrained.random_bundle``): it exercises
the whole runtime; only the sound it makes is meaningless.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vssflow_cli.config import ModelConfig
from vssflow_cli.media import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
# Small enough to export in ~2 s and run a window in milliseconds; real window length (5 s).
TEST_CONFIG = ModelConfig(name="test", latent_channels=16, width=32, depth=1, heads=2, ffn_hidden=64, cross_dim=32)
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)  # fmt: skip


def make_clip(
    path: Path,
    seconds: float,
    *,
    size: str = "160x120",
    rate: float = 25,
    audio: bool = True,
    video_args: tuple[str, ...] = H264,
    audio_args: tuple[str, ...] = ("-c:a", "aac"),
    vf: str | None = None,
    extra: tuple[str, ...] = (),
    pattern: str = "testsrc2",
) -> Path:
    """A test-pattern video (moving ``pattern``), optionally with a 440 Hz tone."""
    args = ["-f", "lavfi", "-i", f"{pattern}=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    if vf:
        args += ["-vf", vf]
    args += [*video_args, *(audio_args if audio else ())]
    ffmpeg(*args, *extra, str(path))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def video_md5(path: Path) -> str:
    """md5 of the video packets (``ffmpeg -i X -map 0:v -c copy -f md5 -``)."""
    out = subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", f"file:{path}", "-map", "0:v", "-c", "copy", "-f", "md5", "-"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def stream_durations(path: Path) -> dict[str, list[float]]:
    """Seconds of every video and audio stream, from packet timestamps (PyAV, no decoding)."""
    import av

    out: dict[str, list[float]] = {"video": [], "audio": []}
    with av.open(str(path)) as c:
        ends: dict[int, float] = {}
        starts: dict[int, float] = {}
        for pkt in c.demux():
            if pkt.pts is None or pkt.stream.type not in out:
                continue
            t0 = float(pkt.pts * pkt.time_base)
            t1 = float((pkt.pts + (pkt.duration or 0)) * pkt.time_base)
            starts[pkt.stream.index] = min(starts.get(pkt.stream.index, t0), t0)
            ends[pkt.stream.index] = max(ends.get(pkt.stream.index, t1), t1)
        for s in c.streams:
            if s.type in out and s.index in ends:
                out[s.type].append(ends[s.index] - max(0.0, starts[s.index]))
    return out


def audio_titles(path: Path) -> list[str | None]:
    import av

    with av.open(str(path)) as c:
        return [s.metadata.get("title") or s.metadata.get("handler_name") for s in c.streams.audio]


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*")}


def write_face_clip(path: Path, seconds: float, *, audio: bool = True, size: int = 240) -> Path:
    """A talking-face video: scikit-image's astronaut photo animated with an opening mouth."""
    from skimage import data

    from vssflow_cli.train.render import render_talking_face

    n = int(round(seconds * 25))
    t = np.arange(n) / 25
    apertures = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) * (t % 2 < 1.4)
    frames = render_talking_face(data.astronaut(), apertures, np.random.default_rng(0), out_size=(size, size))
    args = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", "25", "-i", "pipe:0"]  # fmt: skip
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=16000:duration={seconds}"]
    args += [*H264, *(("-c:a", "aac", "-shortest") if audio else ()), str(path)]
    subprocess.run(args, input=frames.tobytes(), check=True, capture_output=True)
    return path


# --------------------------------------------------------------------------- clips


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def clip12(media_dir: Path) -> Path:
    """12 s, 160x120 H.264 + AAC tone."""
    return make_clip(media_dir / "clip12.mp4", 12)


@pytest.fixture(scope="session")
def clip4_silent(media_dir: Path) -> Path:
    """4 s, no audio stream."""
    return make_clip(media_dir / "clip4.mp4", 4, audio=False)


@pytest.fixture(scope="session")
def clip35(media_dir: Path) -> Path:
    """35 s with audio, small frames."""
    return make_clip(media_dir / "clip35.mp4", 35, size="96x72")


@pytest.fixture(scope="session")
def clip_short(media_dir: Path) -> Path:
    """1 s with audio: the fast clip for batches."""
    return make_clip(media_dir / "short.mp4", 1, size="64x48")


@pytest.fixture(scope="session")
def clip_vfr(media_dir: Path) -> Path:
    """Variable frame rate: frames of a 30 fps source dropped irregularly, timestamps kept."""
    return make_clip(media_dir / "vfr.mp4", 6, rate=30, audio=False,
                     vf="select='not(mod(n\\,3))+eq(mod(n\\,7)\\,1)'", extra=("-fps_mode", "vfr"))  # fmt: skip


@pytest.fixture(scope="session")
def clip_rotated(media_dir: Path, clip12: Path) -> Path:
    """clip12's streams with a 90 degree display rotation (portrait as displayed)."""
    out = media_dir / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(clip12), "-c", "copy", str(out))
    return out


@pytest.fixture(scope="session")
def clip_odd(media_dir: Path) -> Path:
    """Odd frame size 99x61 (4:4:4 H.264 allows it), 24 fps."""
    return make_clip(media_dir / "odd.mp4", 3, size="100x62", rate=24, audio=False, vf="scale=99:61",
                     video_args=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"))  # fmt: skip


@pytest.fixture(scope="session")
def clip_webm(media_dir: Path) -> Path:
    return make_clip(media_dir / "clip.webm", 2, size="96x72", video_args=("-c:v", "libvpx", "-deadline", "realtime"),
                     audio_args=("-c:a", "libopus"))  # fmt: skip


@pytest.fixture(scope="session")
def subtitled(media_dir: Path) -> Path:
    """2 s MJPEG + AAC with a French SubRip track (MJPEG: a video most containers can hold)."""
    srt = media_dir / "subtitles.srt"
    srt.write_text("1\n00:00:00,200 --> 00:00:01,000\nBonjour\n\n2\n00:00:01,200 --> 00:00:01,800\nSalut\n")
    out = media_dir / "subtitled.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
           "-i", str(srt), "-c:v", "mjpeg", "-c:a", "aac", "-c:s", "srt", "-metadata:s:s:0", "language=fra",
           str(out))  # fmt: skip
    return out


@pytest.fixture(scope="session")
def face_clip(media_dir: Path) -> Path:
    """4 s talking face (mediapipe finds it) with a tone as audio."""
    return write_face_clip(media_dir / "face.mp4", 4)


# --------------------------------------------------------------------------- model and CLI


@pytest.fixture(scope="session")
def test_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vssflow_cli.train.untrained import random_bundle

    return random_bundle(tmp_path_factory.mktemp("bundle") / "test-model", TEST_CONFIG, seed=0)


@pytest.fixture(scope="session")
def synth(test_bundle: Path):
    from vssflow_cli.runtime import Synthesizer

    return Synthesizer(test_bundle, device="cpu", threads=1)


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny faster-whisper model folder built offline (see tests/test_transcribe.py); ~8 s."""
    from test_transcribe import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="session")
def cli_env(test_bundle: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["VSSFLOW_MODEL"] = str(test_bundle)
    env["VSSFLOW_NO_PROGRESS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("VSSFLOW_DEBUG", None)
    env.pop("VSSFLOW_ASR_MODEL", None)
    return env


class CliRunner:
    """Runs ``python -m vssflow_cli`` in a subprocess with a private TMPDIR (checked empty by tests)."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.tmpdir = tmp / "sys-tmp"
        self.tmpdir.mkdir(exist_ok=True)
        self.env = dict(env, TMPDIR=str(self.tmpdir))
        self.cwd = tmp

    def leftover_tmp(self) -> set[str]:
        """Files left in the private TMPDIR. onnxruntime itself writes a session id file ``.ses``
        there on import; that is not ours and is ignored."""
        return files_in(self.tmpdir) - {".ses"}

    def argv(self, *args: object) -> list[str]:
        return [sys.executable, "-m", "vssflow_cli", *map(str, args)]

    def __call__(self, *args: object, cwd: Path | None = None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:  # noqa: E501
        return subprocess.run(self.argv(*args), env=dict(self.env, **env), cwd=cwd or self.cwd,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def popen(self, *args: object, **kw: object) -> subprocess.Popen:
        """The CLI as a child process, started as from a terminal: SIGHUP at its default even where the test run
        itself ignores it (the suite under ``nohup``), unless ``preexec_fn`` says otherwise."""
        kw.setdefault("preexec_fn", _default_sighup)
        return subprocess.Popen(self.argv(*args), env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]  # fmt: skip


def _default_sighup() -> None:
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture
def cli(cli_env: dict[str, str], tmp_path: Path) -> CliRunner:
    return CliRunner(cli_env, tmp_path)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: a second thread gains little and spin-waits badly on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- transcription


@pytest.fixture(scope="session")
def asr_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XDG_CACHE_HOME for tests of the packaged Whisper model: assembled once per session, never in ~/.cache."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture
def packaged_whisper(asr_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The packaged Whisper base (``vssflow[asr]``, part of the test extras), assembled into ``asr_cache``."""
    from vssflow_cli.asr_models import find_asr_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(asr_cache))
    monkeypatch.delenv("VSSFLOW_ASR_MODEL", raising=False)
    model = find_asr_model(None, download=False)
    assert model.source == "packaged", model
    return model.path
