"""Voice activity on real (synthesised by espeak-ng) speech through silero-vad's shipped ONNX model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synth_speech import espeak_speech

from vssflow_cli.vad import SAMPLE_RATE, speech_probs, speech_spans


def _voiced_extent(wave: np.ndarray) -> tuple[float, float]:
    """First/last 10 ms frame whose RMS is within 30 dB of the loudest: the speech's own extent."""
    frames = wave[: wave.size // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((frames**2).mean(axis=1)) + 1e-9
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -30)
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


@pytest.fixture(scope="module")
def scene():
    """2 s of quiet room noise, an English sentence, 1.5 s quiet, a French one, 2 s quiet."""
    rng = np.random.default_rng(0)

    def quiet(s):
        return (0.002 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32)

    en = espeak_speech("Please open the door and bring me a glass of water.", "en-us")
    fr = espeak_speech("Bonjour à tous, comment allez-vous aujourd'hui ?", "fr-fr")
    parts, truth, t = [], [], 0.0
    for chunk, is_speech in ((quiet(2.0), False), (en, True), (quiet(1.5), False), (fr, True), (quiet(2.0), False)):
        if is_speech:
            a, b = _voiced_extent(chunk)
            truth.append((t + a, t + b))
            chunk = chunk + quiet(chunk.size / SAMPLE_RATE)[: chunk.size]
        parts.append(chunk)
        t += chunk.size / SAMPLE_RATE
    return np.concatenate(parts), truth


def test_speech_spans_match_the_spoken_sentences(scene):
    wave, truth = scene
    spans = speech_spans(wave)
    assert spans == sorted(spans) and all(e > s for s, e in spans)
    assert all(0 <= s and e <= wave.size / SAMPLE_RATE for s, e in spans)
    # every detected span lies in (or right next to) a sentence
    for s, e in spans:
        assert any(s > ts - 0.3 and e < te + 0.5 for ts, te in truth), (s, e, truth)
    # and the sentences are covered
    for ts, te in truth:
        covered = sum(max(0.0, min(e, te) - max(s, ts)) for s, e in spans)
        assert covered > 0.75 * (te - ts), (ts, te, spans)
    probs = speech_probs(wave)
    assert probs.shape == (-(-wave.size // 512),) and probs[: int(1.5 * SAMPLE_RATE / 512)].max() < 0.5


def test_silence_and_empty_have_no_speech():
    rng = np.random.default_rng(1)
    assert speech_spans((0.002 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)) == []
    assert speech_spans(np.zeros(0, np.float32)) == []


def test_vad_does_not_import_torch():
    code = (
        "import sys, numpy as np; from vssflow_cli.vad import speech_spans; "
        "speech_spans(np.zeros(16000, np.float32)); print('torch' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "False"
