"""Writing outputs: atomic files, WAV, and remuxing a generated track into a video.

Every output is written to a hidden temp file in the destination folder (same extension, so
ffmpeg and soundfile pick the right format) and renamed over the destination only when complete:
an interrupted or failed run leaves the destination as it was and no partial file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from vssflow_cli.errors import OutputError, UsageError
from vssflow_cli.loudness import audio_layout, upmix_filter
from vssflow_cli.media import MediaInfo, input_url, probe, run_ffmpeg

if TYPE_CHECKING:
    import numpy as np

MIX_MODES = ("replace", "add", "keep")
DEFAULT_ADD_GAIN_DB = -6.0

# Audio codec per container for the generated track: (encoder, extra args).
_AAC = ("aac", ["-b:a", "160k"])
AUDIO_CODECS: dict[str, tuple[str, list[str]]] = {
    ".mp4": _AAC, ".m4v": _AAC, ".mov": _AAC, ".mkv": _AAC, ".ts": _AAC, ".m2ts": _AAC,
    ".mts": _AAC, ".flv": _AAC, ".3gp": _AAC,
    ".webm": ("libopus", ["-b:a", "128k"]),
    ".ogv": ("libvorbis", ["-q:a", "5"]),
    ".avi": ("libmp3lame", ["-b:a", "192k"]),
}  # fmt: skip
VIDEO_EXTS = tuple(AUDIO_CODECS)
AUDIO_EXTS = (".wav", ".flac")

_live_temps: set[Path] = set()


def live_temp_files() -> set[Path]:
    """Temp outputs being written right now (for signal handlers and tests)."""
    return set(_live_temps)


def temp_path_for(final: Path) -> Path:
    return final.with_name(f".{final.stem}.{secrets.token_hex(4)}.partial{final.suffix}")


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it over ``final`` if the block succeeds.

    On any exception, KeyboardInterrupt and signals included, the temp file is removed.
    """
    final = Path(final)
    tmp = temp_path_for(final)
    _live_temps.add(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{final}: nothing was written; please report this")
        try:
            os.replace(tmp, final)
        except OSError as e:
            raise OutputError(f"{final}: cannot write ({e.strerror}); choose another output path") from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _live_temps.discard(tmp)


def check_output_path(out: str | os.PathLike[str], *, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """Validate an output path before any work: folder exists and is writable, no clobbering."""
    out = Path(out)
    for src in inputs:
        with contextlib.suppress(OSError):
            if out.resolve() == Path(src).resolve():
                raise OutputError(f"{out}: output would replace the input; choose another output path")
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: folder {parent} does not exist; create it or choose another output path")
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name or use --out-dir")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: already exists; pass --overwrite to replace it or --skip-existing")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: folder {parent} is not writable; choose another output path")
    return out


def write_wav(path: str | os.PathLike[str], wave: np.ndarray, sr: int) -> Path:
    """Write mono float audio (N,) as 16-bit PCM (WAV or FLAC by extension), atomically."""
    import numpy as np
    import soundfile as sf

    path = Path(path)
    data = np.clip(np.asarray(wave, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_output(path) as tmp:
        sf.write(str(tmp), data, sr, subtype="PCM_16")
    return path


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad (N,) to exactly n samples."""
    import numpy as np

    if len(wave) >= n:
        return wave[:n]
    return np.concatenate([wave, np.zeros(n - len(wave), dtype=wave.dtype)])


def mux(
    video: str | os.PathLike[str],
    audio: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mix: str = "replace",
    gain_db: float | None = None,
    title: str = "vssflow foley",
    info: MediaInfo | None = None,
    speech: bool = False,
) -> Path:
    """Remux ``video`` with the generated ``audio`` file into ``out``, atomically.

    The video stream is copied (``-c:v copy``): its packets are bit-identical to the input's.
    The generated track is encoded for the container and padded/trimmed to the video's duration.
    ``mix``: ``replace`` drops the original audio; ``add`` mixes the generated track under the
    original at ``gain_db`` (default -6 dB) in the original's channel layout (front left + right, or
    the centre if ``speech``; see :func:`vssflow_cli.loudness.upmix_filter`); ``keep`` keeps the
    original audio first and adds the generated one as a second, titled, non-default track.
    The pipeline passes the gain its loudness policy chose (:mod:`vssflow_cli.loudness`).
    """
    if mix not in MIX_MODES:
        raise UsageError(f"unknown --mix {mix!r}; use one of {', '.join(MIX_MODES)}")
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in AUDIO_CODECS:
        raise UsageError(f"{out}: unsupported output extension; use one of {', '.join(VIDEO_EXTS)}")
    info = info or probe(video)
    if mix != "replace" and not info.has_audio:
        mix = "replace"  # nothing to add to or keep
    gain = gain_db if gain_db is not None else (DEFAULT_ADD_GAIN_DB if mix == "add" else 0.0)
    dur = f"{info.duration:.6f}"
    fit = f"apad=whole_dur={dur},atrim=duration={dur}"
    codec, codec_args = AUDIO_CODECS[ext]
    n_orig = info.n_audio if mix == "keep" else 0

    args = ["-i", input_url(video), "-i", input_url(audio)]
    gen = f"[1:a:0]aresample=48000,volume={gain:.3f}dB"
    if mix == "add":
        layout = audio_layout(video)
        graph = (
            f"[0:a:0]aresample=48000,aformat=channel_layouts={layout.spec}[o];"
            f"{gen},{upmix_filter(layout, speech=speech)}[g];"
            f"[o][g]amix=inputs=2:duration=longest:normalize=0,{fit}[gen]"
        )
        if codec == "libmp3lame" and len(layout.names) > 2:  # MP3 is stereo at most; AVI holds AC-3 too
            codec, codec_args = "ac3", ["-b:a", "448k"]
        elif codec_args[0] == "-b:a" and len(layout.names) > 2:  # the stereo bitrate, per channel pair
            codec_args = ["-b:a", f"{int(codec_args[1][:-1]) * len(layout.names) // 2}k"]
    else:
        graph = f"{gen},{fit}[gen]"
    args += ["-filter_complex", graph, "-map", f"0:{info.video_index}"]
    if mix == "keep":
        args += ["-map", "0:a"]
    args += ["-map", "[gen]", "-c:v", "copy"]
    same_container = Path(info.path).suffix.lower() == ext
    for i in range(n_orig):
        args += [f"-c:a:{i}"] + (["copy"] if same_container else [codec, *codec_args])
    args += [f"-c:a:{n_orig}", codec, *codec_args]
    label = title if mix != "add" else f"original + {title}"
    args += [f"-metadata:s:a:{n_orig}", f"title={label}", f"-metadata:s:a:{n_orig}", f"handler_name={label}"]
    args += [f"-disposition:a:{n_orig}", "0" if mix == "keep" else "default"]
    if ext in (".mp4", ".m4v", ".mov"):
        args += ["-movflags", "+faststart"]
    args += ["-map_metadata", "0", "-map_chapters", "0"]
    with atomic_output(out) as tmp:
        src_ext = Path(info.path).suffix.lower() or ".mkv"
        run_ffmpeg(
            [*args, "-y", input_url(tmp)],
            error=OutputError,
            what=f"{out}: cannot write",
            hint=f"choose an output type that can hold this {info.video_codec} video, e.g. {src_ext} or .mkv",
        )
    return out
