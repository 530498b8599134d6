"""Where untimed dub text goes: lip motion narrowed by voice activity (real silero VAD, real ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import ffmpeg
from synth_speech import espeak_speech

from vssflow_cli.media import probe
from vssflow_cli.pipeline import _speaking_spans


def _clip_with_speech_at(tmp_path: Path, start: float, seconds: float = 5.0) -> tuple[Path, float]:
    speech = np.asarray(espeak_speech("Hello there, how are you today?", "en-us", sample_rate=16000), np.float32)
    wave = np.zeros(int(seconds * 16000), np.float32)
    a = int(start * 16000)
    wave[a : a + len(speech)] = speech[: len(wave) - a]
    wav = tmp_path / "speech.wav"
    sf.write(wav, wave, 16000)
    out = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x64:rate=25:duration={seconds}", "-i", str(wav),
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out))  # fmt: skip
    return out, start + len(speech) / 16000


def test_voice_activity_narrows_lip_motion(tmp_path: Path) -> None:
    clip, end = _clip_with_speech_at(tmp_path, 1.0)
    spans = _speaking_spans(clip, probe(clip), [(0.2, 4.9)], [(0.0, 5.0)])
    assert spans, "voice activity inside the lip-motion span must be found"
    assert 0.8 <= spans[0][0] <= 1.3 and end - 0.4 <= spans[-1][1] <= min(end + 0.4, 4.9)


def test_voice_elsewhere_keeps_the_lip_spans(tmp_path: Path) -> None:
    clip, _ = _clip_with_speech_at(tmp_path, 2.5)
    assert _speaking_spans(clip, probe(clip), [(0.0, 0.5)], [(0.0, 5.0)]) == [(0.0, 0.5)]
    silent = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=2", "-c:v", "libx264", str(silent))
    assert _speaking_spans(silent, probe(silent), [(0.3, 1.2)], [(0.0, 2.0)]) == [(0.3, 1.2)]


def test_no_lip_motion_speaks_where_the_voice_is_and_a_face_shows(tmp_path: Path) -> None:
    """No lip motion at all: voice activity while a face is on screen, never a stretch without a face."""
    clip, end = _clip_with_speech_at(tmp_path, 1.0)
    spans = _speaking_spans(clip, probe(clip), [], [(0.0, 5.0)])
    assert spans and 0.8 <= spans[0][0] <= 1.3 and spans[-1][1] <= min(end + 0.4, 5.0)
    assert _speaking_spans(clip, probe(clip), [], [(4.5, 5.0)]) == []  # the face shows only after the voice
