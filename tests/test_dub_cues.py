"""Dubbing puts speech only where the script says, whatever the lips do elsewhere (embedded model, real ffmpeg)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _decode(path: Path) -> np.ndarray:
    pcm = subprocess.run(
        [_ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(pcm, np.float32)


@pytest.mark.slow
def test_timed_cues_hold_the_speech_energy(tmp_path: Path) -> None:
    from vssflow_cli.pipeline import JobOptions, dub, load_synthesizer

    # 12 s of a face whose mouth moves the whole time; the script speaks only at 1-3.5 s and 6-9 s
    clip = tmp_path / "talk12.mp4"
    subprocess.run(
        [_ffmpeg(), "-v", "error", "-stream_loop", "2", "-i", str(REPO / "examples" / "speaker.mp4"), "-t", "12",
         "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )
    srt = tmp_path / "cues.srt"
    srt.write_text(
        "1\n00:00:01,000 --> 00:00:03,500\nPlease enter your password.\n\n"
        "2\n00:00:06,000 --> 00:00:09,000\nThe conference is now being recorded.\n",
        encoding="utf-8",
    )
    out = tmp_path / "dub.wav"
    opts = JobOptions(wav_only=True, steps=8)
    res = dub(clip, out, srt, opts, load_synthesizer(opts))
    assert res.segments == 2
    w = _decode(out).astype(np.float64)
    t = np.arange(len(w)) / 16000
    inside = ((t >= 0.9) & (t <= 3.6)) | ((t >= 5.9) & (t <= 9.1))
    energy = w**2
    assert energy.sum() > 0
    share = energy[inside].sum() / energy.sum()
    assert share >= 0.95, f"only {share:.3f} of the speech energy lies inside the cues"
    assert energy[inside].mean() > 100 * max(energy[~inside].mean(), 1e-12)
