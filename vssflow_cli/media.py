"""Reading media: probe a file, stream its frames at a fixed rate and size, read its audio.

ffmpeg is the one shipped by imageio-ffmpeg (or ``$VSSFLOW_FFMPEG``), always called with an
argument list, ``-nostdin`` and ``file:`` URLs, so a file name can never be taken as an option or
a protocol. Probing uses PyAV (the same FFmpeg libraries, in process), opened on a Python file
object for the same reason. Every failure is an :class:`InputError` with ffmpeg's last message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vssflow_cli.errors import InputError, ModelError

if TYPE_CHECKING:
    import numpy as np

_IMAGE_FORMATS = {"image2", "webp", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe"}
_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: ``$VSSFLOW_FFMPEG`` or the one bundled with imageio-ffmpeg."""
    exe = os.environ.get("VSSFLOW_FFMPEG")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ModelError("ffmpeg not found; run `pip install imageio-ffmpeg`") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def input_url(path: str | os.PathLike[str]) -> str:
    """An ffmpeg URL for a local file that no name can turn into an option or protocol."""
    return "file:" + os.path.abspath(os.fspath(path))


@lru_cache(maxsize=1)
def _prctl() -> Any:
    """libc's ``prctl`` (Linux), loaded once in the parent so the forked child only calls it."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies (Linux), else None.

    Without it an ffmpeg started in its own session (so Ctrl-C reaches only us) outlives a parent
    killed by SIGKILL, the OOM killer or a hang-up, and keeps writing its partial output. The
    signal follows the *thread* that started the child, so start ffmpeg from a long-lived thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl, parent = _prctl(), os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def ffmpeg_argv(*args: str, loglevel: str = "error") -> list[str]:
    return [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", loglevel, *args]


def ffmpeg_message(stderr: bytes | str) -> str:
    """ffmpeg's first error line (the root cause; later lines only repeat "Error opening ..."),
    without the ``[ctx @ 0x..]`` prefix."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [_PREFIX.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    msg = lines[0] if lines else "no message"
    return msg if len(msg) <= 200 else msg[:197] + "..."


def run_ffmpeg(args: list[str], *, error: type[Exception] = InputError, what: str, hint: str) -> None:
    """Run ffmpeg to completion; on failure raise ``error``: ``what``, ffmpeg's message, ``hint``.

    ``subprocess.run`` kills the child if we are interrupted (KeyboardInterrupt or our SIGTERM
    exception), and :func:`_die_with_parent` if we are killed, so an interrupted mux never keeps
    writing. A full disk gets its own hint, whatever ``hint`` says.
    """
    proc = subprocess.run(
        ffmpeg_argv(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches us only; we decide what the child does
        preexec_fn=_die_with_parent(),
    )
    if proc.returncode != 0:
        msg = ffmpeg_message(proc.stderr)
        if "No space left on device" in proc.stderr.decode("utf-8", "replace"):
            msg, hint = "no space left on device", "free some space or write the output to another disk"
        raise error(f"{what}: {msg}; {hint}")


@dataclass(frozen=True)
class MediaInfo:
    """What vssflow needs to know about an input. Sizes are as displayed (rotation applied)."""

    path: str
    format: str
    duration: float  # seconds of the video stream
    fps: float  # average frame rate
    width: int
    height: int
    rotation: int  # degrees, 0/90/180/270, from the display matrix
    video_codec: str
    video_index: int  # absolute stream index of the video stream used
    n_frames: int  # from the container, else estimated from duration * fps
    vfr: bool  # average and base frame rates differ
    has_audio: bool
    audio_rate: int | None
    audio_channels: int
    audio_codec: str | None
    n_audio: int
    n_streams: int
    audio_layout: str | None = None  # channel layout name ("stereo", "5.1(side)"), None if unnamed
    subtitles: tuple[tuple[int, str], ...] = ()  # (absolute stream index, codec name) per subtitle stream

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for ``vssflow info``."""
        audio = "none"
        if self.has_audio:
            layout = f" ({self.audio_layout})" if self.audio_layout else ""
            audio = f"{self.audio_codec} {self.audio_rate} Hz {self.audio_channels} ch{layout}"
        subs = f", subtitles {' '.join(codec for _, codec in self.subtitles)}" if self.subtitles else ""
        return (f"{self.path}: {self.duration:.3f} s, {self.width}x{self.height} {self.video_codec} "
                f"{self.fps:.3f} fps{' (VFR)' if self.vfr else ''}, rotation {self.rotation}, audio {audio}{subs}")


def check_input_file(path: str | os.PathLike[str]) -> Path:
    """Fail early, with a fix, on paths that are missing, not files, unreadable or empty."""
    p = Path(path)
    if not p.exists():
        hint = " (for a name starting with '-', put `--` before it or write ./NAME)" if p.name.startswith("-") else ""
        raise InputError(f"{p}: no such file; check the path{hint}")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file; pass a video file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: not readable; check its permissions")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file (0 bytes); pass a complete video")
    return p


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe a media file; raises InputError unless it has a decodable video stream."""
    p = check_input_file(path)
    import av

    try:
        with open(p, "rb") as fh, av.open(fh, mode="r", metadata_errors="ignore") as container:
            return _describe(p, container)
    except InputError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError, IndexError, KeyError, TypeError) as e:
        raise InputError(f"{p}: not a readable video ({_short(e)}); check the file or re-encode it") from e


_MARK_KEYS = ("vssflow", "encoding_tool", "encoder")
_MARK_TITLE = re.compile(r"^(original \+ )?vssflow (foley|dub)$")


def vssflow_mark(path: str | os.PathLike[str]) -> str | None:
    """What marks ``path`` as a vssflow output (``"vssflow 0.1.0 foley"``), else None; reads headers only.

    :func:`vssflow_cli.mux.mux` tags the container (MKV, WebM, MP4, M4V, FLV and Ogg keep the tag) and
    titles the generated track ``vssflow foley`` (all but MPEG-TS keep that). Never raises: a file that
    cannot be read is not marked (probing it reports why).
    """
    p = Path(path)
    with contextlib.suppress(OSError):
        if not p.is_file() or p.stat().st_size == 0:  # a FIFO or device would block the read
            return None
    import av

    try:
        with open(p, "rb") as fh, av.open(fh, mode="r", metadata_errors="ignore") as c:
            tags = [dict(c.metadata), *(dict(s.metadata) for s in c.streams)]
            titles = [s.metadata.get(k, "") for s in c.streams.audio for k in ("title", "handler_name")]
    except (av.FFmpegError, ValueError, OSError, EOFError, IndexError, KeyError, TypeError):
        return None
    for d in tags:
        for k, v in d.items():
            if k.lower() in _MARK_KEYS and str(v).startswith("vssflow "):
                return str(v)
    return next((t for t in titles if _MARK_TITLE.match(t)), None)


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = re.sub(r"^\[Errno -?\d+\]\s*", "", msg)
    msg = re.sub(r":\s*'[^']*'$", "", msg)  # PyAV appends the file's name
    return msg[:150]


def _rate(r: Any) -> float:
    try:
        return float(r) if r else 0.0
    except (TypeError, ZeroDivisionError):
        return 0.0


def _describe(p: Path, c: Any) -> MediaInfo:
    import av

    if c.format.name in _IMAGE_FORMATS or c.format.name.endswith("_pipe"):
        raise InputError(f"{p}: is a still image ({c.format.name}), not a video; pass a video file")
    attached = av.stream.Disposition.attached_pic
    videos = [s for s in c.streams.video if not (s.disposition & attached)]
    if not videos:
        raise InputError(f"{p}: no video stream; vssflow needs a video (use a video file, not audio or an image)")
    v = videos[0]
    audios = [s for s in c.streams.audio if s.codec_context is not None]  # None: codec unknown (truncated)

    fps = _rate(v.average_rate) or _rate(v.guessed_rate) or _rate(v.base_rate)
    base = _rate(v.base_rate) or fps
    duration = float(v.duration * v.time_base) if v.duration and v.time_base else 0.0
    if duration <= 0 and c.duration:
        duration = c.duration / 1_000_000  # AV_TIME_BASE
    if fps <= 0 or fps > 1000:
        raise InputError(f"{p}: video frame rate is unknown ({fps:g}); re-encode it with a fixed frame rate")

    rotation = None
    for frame in c.decode(v):
        rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
        break
    if rotation is None:
        raise InputError(f"{p}: no decodable video frame; the file is corrupt or truncated")
    if duration <= 0:
        duration = _scan_duration(c, v)
    if duration <= 0:
        raise InputError(f"{p}: video has zero length; pass a video with at least one second")

    cc = v.codec_context
    w, h = int(cc.width or 0), int(cc.height or 0)
    if w <= 0 or h <= 0:
        raise InputError(f"{p}: video has no frame size; the file is corrupt")
    if rotation % 180 == 90:
        w, h = h, w
    a = audios[0] if audios else None
    layout = a.codec_context.layout.name if a is not None and a.codec_context.layout else ""
    subtitles = tuple((s.index, _codec_name(s)) for s in c.streams.subtitles)
    return MediaInfo(
        path=str(p),
        format=c.format.name,
        duration=duration,
        fps=fps,
        width=w,
        height=h,
        rotation=rotation,
        video_codec=_codec_name(v),
        video_index=v.index,
        n_frames=int(v.frames) if v.frames else int(round(duration * fps)),
        vfr=abs(fps - base) > 0.01 * max(fps, base),
        has_audio=a is not None,
        audio_rate=int(a.codec_context.sample_rate) if a is not None else None,
        audio_channels=int(a.codec_context.channels) if a is not None else 0,
        audio_codec=a.codec_context.name if a is not None else None,
        n_audio=len(audios),
        n_streams=len(c.streams),
        audio_layout=layout if layout and not layout.endswith(("channel", "channels")) else None,
        subtitles=subtitles,
    )


def _codec_name(stream: Any) -> str:
    """The codec's own name ("av1"), not its decoder's ("libdav1d"); "unknown" if FFmpeg has none."""
    cc = stream.codec_context
    return cc.codec.canonical_name if cc is not None else "unknown"


def _scan_duration(c: Any, v: Any) -> float:
    """Duration from packet timestamps, for containers that do not store one (raw streams)."""
    c.seek(0)
    end = 0.0
    for pkt in c.demux(v):
        if pkt.pts is not None and pkt.time_base:
            end = max(end, float((pkt.pts + (pkt.duration or 0)) * pkt.time_base))
    return end


def display_size(info: MediaInfo, width: int) -> tuple[int, int]:
    """(w, h) for decoding at ``width`` pixels wide (never upscaled) with the aspect kept, both even."""
    w = min(width, info.width)
    w -= w % 2
    h = max(2, int(round(info.height * w / info.width / 2)) * 2)
    return max(2, w), h


class _FramePipe:
    """An ffmpeg child writing raw RGB frames to a pipe; killed and reaped on close."""

    def __init__(self, argv: list[str], frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err, start_new_session=True,
            preexec_fn=_die_with_parent(),
        )  # fmt: skip

    def read(self, n_frames: int) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read(n_frames * self.frame_bytes)

    def finish(self) -> tuple[int, str]:
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        rc = self.proc.wait()
        self.err.seek(0)
        return rc, ffmpeg_message(self.err.read(8000))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc.wait()
        self.err.close()


def iter_frames(
    path: str | os.PathLike[str],
    *,
    fps: float,
    width: int,
    height: int,
    chunk_frames: int = 250,
    stream_index: int | None = None,
) -> Iterator[np.ndarray]:
    """Stream the video as chunks of frames, uint8 (n, height, width, 3) RGB, n <= chunk_frames.

    ffmpeg resamples to a constant ``fps`` (variable frame rate inputs included), applies the
    rotation from the display matrix and scales (area filter) to ``width`` x ``height``. Memory is
    one chunk whatever the video length. Closing the generator kills ffmpeg.
    """
    import numpy as np

    if width <= 0 or height <= 0 or chunk_frames <= 0 or fps <= 0:
        raise ValueError("width, height, chunk_frames and fps must be positive")
    check_input_file(path)
    stream = f"0:{stream_index}" if stream_index is not None else "0:v:0"
    argv = ffmpeg_argv(
        "-i", input_url(path),
        "-map", stream, "-an", "-sn", "-dn",
        "-vf", f"fps={fps:g},scale={width}:{height}:flags=area",
        "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
    )  # fmt: skip
    frame_bytes = width * height * 3
    pipe = _FramePipe(argv, frame_bytes)
    total = 0
    try:
        while True:
            buf = pipe.read(chunk_frames)
            n = len(buf) // frame_bytes
            if n:
                total += n
                yield np.frombuffer(buf, np.uint8, n * frame_bytes).reshape(n, height, width, 3)
            if len(buf) < chunk_frames * frame_bytes:
                break
        rc, msg = pipe.finish()
        if rc != 0:
            raise InputError(f"{path}: cannot decode video: {msg}; check or re-encode the file")
        if total == 0:
            raise InputError(f"{path}: no video frames could be decoded; the file is corrupt or empty")
    finally:
        pipe.close()


def read_audio(path: str | os.PathLike[str], sr: int = 16000, *, max_seconds: float | None = None) -> np.ndarray:
    """The first audio stream, mono float32 at ``sr`` Hz, shape (N,)."""
    import numpy as np

    check_input_file(path)
    argv = ffmpeg_argv("-i", input_url(path), "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sr))
    if max_seconds is not None:
        argv += ["-t", f"{max_seconds:.6f}"]
    argv += ["-f", "f32le", "pipe:1"]
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, start_new_session=True, preexec_fn=_die_with_parent()
    )
    if proc.returncode != 0:
        msg = ffmpeg_message(proc.stderr)
        if "matches no streams" in msg:
            raise InputError(f"{path}: has no audio stream; pass a video with sound or a script (--text)")
        raise InputError(f"{path}: cannot decode audio: {msg}; check or re-encode the file")
    return np.frombuffer(proc.stdout, np.float32).copy()
