"""Writing audio outputs: WAV, and remuxing a generated track into a video (atomically, via
:func:`vssflow_cli.output.atomic_output`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vssflow_cli import __version__
from vssflow_cli.errors import ContainerError, OutputError, UsageError
from vssflow_cli.loudness import audio_layout, upmix_filter
from vssflow_cli.media import MediaInfo, input_url, probe, run_ffmpeg
from vssflow_cli.output import atomic_output

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
    # AVI has no edit lists: an encoder delay (MP3, AAC) makes ffmpeg shift every video frame
    ".avi": ("pcm_s16le", []),
}  # fmt: skip
VIDEO_EXTS = tuple(AUDIO_CODECS)
AUDIO_EXTS = (".wav", ".flac")

# Video codecs each container takes as they are (the video is never re-encoded), as the bundled
# ffmpeg muxes them into a file it can read back (tests/test_media.py checks a sample); None: any.
_MP4 = frozenset({"h264", "hevc", "vvc", "av1", "vp9", "mpeg4", "mpeg1video", "mpeg2video", "mjpeg", "png", "ffv1"})
_TS = frozenset({"h264", "hevc", "vvc", "mpeg1video", "mpeg2video"})
COPY_VIDEO_CODECS: dict[str, frozenset[str] | None] = {
    ".mp4": _MP4, ".m4v": frozenset({"h264", "mpeg4"}),
    ".mov": frozenset({"h264", "hevc", "vvc", "mpeg4", "mpeg1video", "mpeg2video", "mjpeg", "png", "ffv1", "prores",
                       "dnxhd", "h263", "huffyuv", "theora", "wmv2", "flv1", "msmpeg4v3"}),
    ".mkv": None, ".ts": _TS, ".m2ts": _TS, ".mts": _TS,
    ".flv": frozenset({"h264", "hevc", "vvc", "av1", "vp9", "flv1"}),
    ".3gp": frozenset({"h263", "h264", "mpeg4"}),
    ".webm": frozenset({"vp8", "vp9", "av1"}),
    ".ogv": frozenset({"theora", "vp8"}),
    ".avi": frozenset({"mjpeg", "mpeg4", "mpeg1video", "mpeg2video", "h263", "vp8", "vp9", "av1", "theora", "ffv1",
                       "huffyuv", "png", "prores", "dnxhd", "rawvideo", "wmv2", "msmpeg4v3", "flv1"}),
}  # fmt: skip
# Inputs whose H.264 is an Annex B stream, the only form AVI stores (MP4/MKV hold avcC, which ffmpeg
# would have to rewrite, changing the video packets).
_ANNEX_B_FORMATS = ("avi", "mpegts", "h264")

# Subtitles per container: (codecs kept as they are, codec other text subtitles are converted to).
_MOV_TEXT = (frozenset({"mov_text"}), "mov_text")
SUBTITLE_CODECS: dict[str, tuple[frozenset[str], str | None]] = {
    ".mp4": _MOV_TEXT, ".m4v": _MOV_TEXT, ".mov": _MOV_TEXT, ".3gp": _MOV_TEXT,
    ".mkv": (frozenset({"subrip", "ass", "webvtt", "dvd_subtitle", "hdmv_pgs_subtitle", "dvb_subtitle"}), "subrip"),
    ".webm": (frozenset({"webvtt"}), "webvtt"),
    ".ts": (frozenset({"dvb_subtitle"}), None), ".m2ts": (frozenset({"dvb_subtitle"}), None),
    ".mts": (frozenset({"dvb_subtitle"}), None),
}  # fmt: skip


def _holds_video(ext: str, info: MediaInfo) -> bool:
    codecs = COPY_VIDEO_CODECS.get(ext, frozenset())
    if codecs is None or info.video_codec in codecs:
        return True
    return ext == ".avi" and info.video_codec == "h264" and info.format in _ANNEX_B_FORMATS


def check_container(out: str | os.PathLike[str], info: MediaInfo) -> None:
    """ContainerError (exit 2), before any work, if the container of ``out`` cannot hold the input's video."""
    out = Path(out)
    ext = out.suffix.lower()
    if ext in AUDIO_CODECS and not _holds_video(ext, info):
        fit = " ".join(e for e in VIDEO_EXTS if _holds_video(e, info))
        raise ContainerError(
            f"{out}: a {ext} file cannot hold this {info.video_codec} video (vssflow never re-encodes the "
            f"picture); name the output with one of {fit}"
        )


def _is_text_subtitle(codec: str) -> bool:
    import av

    try:
        return bool(av.codec.Codec(codec, "r").text_sub)
    except (av.FFmpegError, ValueError):  # no decoder for it: it cannot be converted either
        return False


def _subtitle_plan(info: MediaInfo, ext: str) -> tuple[list[str], list[str]]:
    """ffmpeg arguments keeping the input's subtitle streams that ``ext`` can hold (text subtitles
    converted if need be), and the codecs of those it cannot."""
    keep, convert_to = SUBTITLE_CODECS.get(ext, (frozenset(), None))
    args: list[str] = []
    dropped: list[str] = []
    for index, codec in info.subtitles:
        how = "copy" if codec in keep else convert_to if convert_to and _is_text_subtitle(codec) else None
        if how is None:
            dropped.append(codec)
        else:
            args += ["-map", f"0:{index}", f"-c:s:{len(args) // 4}", how]  # 4 arguments per kept stream
    return args, dropped


def mux_warnings(out: str | os.PathLike[str], info: MediaInfo) -> list[str]:
    """What :func:`mux` will leave out of ``out``: one line per kind of loss, with where it would fit."""
    ext = Path(out).suffix.lower()
    _, dropped = _subtitle_plan(info, ext)
    if not dropped:
        return []
    n, them = len(dropped), "them" if len(dropped) > 1 else "it"
    fit = [e for e in VIDEO_EXTS if not _subtitle_plan(info, e)[1] and _holds_video(e, info)]
    where = f"write {' or '.join(fit)} to keep {them}" if fit else f"no output type vssflow writes can hold {them}"
    return [f"{out}: {n} subtitle stream{'s' if n > 1 else ''} ({', '.join(dropped)}) left out, {ext} cannot hold "
            f"{them}; {where}"]  # fmt: skip


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
    generated_first: bool = False,
    overwrite: bool = True,
) -> Path:
    """Remux ``video`` with the generated ``audio`` file into ``out``, atomically.

    The video stream is copied (``-c:v copy``): its packets are bit-identical to the input's.
    The generated track is encoded for the container and padded/trimmed to the video's duration.
    ``mix``: ``replace`` drops the original audio; ``add`` mixes the generated track under the
    original at ``gain_db`` (default -6 dB) in the original's channel layout (front left + right, or
    the centre if ``speech``; see :func:`vssflow_cli.loudness.upmix_filter`); ``keep`` keeps the
    original audio first and adds the generated one as a second, titled, non-default track, or, with
    ``generated_first`` (a dub's default), the generated track first and default, the original after it.
    The pipeline passes the gain its loudness policy chose (:mod:`vssflow_cli.loudness`). Subtitle
    streams are kept where the container can hold them (see :func:`mux_warnings` for the others);
    chapters and metadata too. ``overwrite=False``: a file that appears at ``out`` while ffmpeg writes is
    kept, and OutputError raised (see :func:`vssflow_cli.output.atomic_output`).
    """
    if mix not in MIX_MODES:
        raise UsageError(f"unknown --mix {mix!r}; use one of {', '.join(MIX_MODES)}")
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in AUDIO_CODECS:
        raise UsageError(f"{out}: unsupported output extension; use one of {', '.join(VIDEO_EXTS)}")
    info = info or probe(video)
    check_container(out, info)
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
        # AVI's PCM holds any layout as it is; a bitrate is the stereo one, scaled per channel pair
        if codec_args[:1] == ["-b:a"] and len(layout.names) > 2:
            codec_args = ["-b:a", f"{int(codec_args[1][:-1]) * len(layout.names) // 2}k"]
    else:
        graph = f"{gen},{fit}[gen]"
    args += ["-filter_complex", graph, "-map", f"0:{info.video_index}"]
    first = generated_first and mix == "keep"
    g = 0 if first else n_orig  # output audio index of the generated track
    orig_maps = ["-map", "0:a"] if mix == "keep" else []
    args += (["-map", "[gen]", *orig_maps] if first else [*orig_maps, "-map", "[gen]"]) + ["-c:v", "copy"]
    args += _subtitle_plan(info, ext)[0]
    same_container = Path(info.path).suffix.lower() == ext
    for i in range(n_orig + 1):
        # options per output stream: a bare -b:a would also retime a copied PCM track in AVI
        encode = [f"-c:a:{i}", codec, *(f"{a}:{i}" if a.startswith("-") else a for a in codec_args)]
        args += [f"-c:a:{i}", "copy"] if i != g and same_container else encode
    label = title if mix != "add" else f"original + {title}"
    args += [f"-metadata:s:a:{g}", f"title={label}", f"-metadata:s:a:{g}", f"handler_name={label}"]
    args += [f"-disposition:a:{g}", "0" if mix == "keep" and not first else "default"]
    if first:  # the originals follow, none of them default
        args += [a for i in range(1, n_orig + 1) for a in (f"-disposition:a:{i}", "0")]
    if ext in (".mp4", ".m4v", ".mov"):
        args += ["-movflags", "+faststart"]
    args += ["-map_metadata", "0", "-map_chapters", "0"]
    mark = f"vssflow {__version__} {title.removeprefix('vssflow ')}"  # read back by media.vssflow_mark
    args += ["-metadata", f"vssflow={mark}", "-metadata", f"encoding_tool={mark}"]
    with atomic_output(out, overwrite=overwrite) as tmp:
        src_ext = Path(info.path).suffix.lower() or ".mkv"
        run_ffmpeg(
            [*args, "-y", input_url(tmp)],
            error=OutputError,
            what=f"{out}: cannot write",
            hint=f"choose an output type that can hold this {info.video_codec} video, e.g. {src_ext} or .mkv",
        )
    return out
