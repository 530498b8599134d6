"""The speech judge: WER/CER definitions, and Whisper base telling real speech, espeak-ng speech and babble apart.

Real model (packaged Whisper base), real speech: the English asterisk prompt under ``examples/talking.mp4``, the
same sentence spoken by espeak-ng, and that recording reversed in time (babble: speech-like sound, no words).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import REPO
from synth_speech import espeak_speech

from vssflow_cli.media import read_audio
from vssflow_cli.speech_judge import (
    LOOP_RATIO,
    WhisperJudge,
    cer,
    compression_ratio,
    edit_distance,
    normalize_text,
    wer,
)

pytest.importorskip("faster_whisper")

TEXT = (REPO / "examples" / "speaker.txt").read_text().strip()  # "That is not a valid conference number. ..."


def test_normalize_text() -> None:
    assert normalize_text("That's a Valid-number, 42!") == "that's a valid number 42"
    assert normalize_text("  'Quoted'   text… ") == "quoted text"
    assert normalize_text("L’été — DÉJÀ vu") == "l'été déjà vu"
    assert normalize_text("Привет,мир") == "привет мир"


def test_wer_and_cer() -> None:
    assert edit_distance("the cat sat".split(), "a cat sat down".split()) == 2  # one substitution, one insertion
    assert edit_distance("abc", "") == 3
    assert wer("The cat sat.", "the cat, sat") == 0.0
    assert wer("the cat sat", "a cat sat down") == pytest.approx(2 / 3)
    assert wer("the cat", "") == 1.0 and wer("", "") == 0.0 and wer("", "uh") == 1.0
    assert wer("a b", "c d e f") == 2.0  # insertions can push WER past 1
    assert cer("Cat!", "cut") == pytest.approx(1 / 3)


def test_compression_ratio_flags_repetition_loops() -> None:
    assert compression_ratio("Sure, " + "sir, " * 40) > LOOP_RATIO  # a decoder stuck on babble
    assert compression_ratio(TEXT) < LOOP_RATIO and compression_ratio("") == 0.0


@pytest.fixture(scope="module")
def judge(asr_cache) -> WhisperJudge:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(asr_cache))
        mp.delenv("VSSFLOW_ASR_MODEL", raising=False)
        return WhisperJudge()


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    return read_audio(REPO / "examples" / "talking.mp4", 16000)


def test_judge_scores_real_and_espeak_speech_and_rejects_babble(judge: WhisperJudge, real: np.ndarray) -> None:
    human = judge.score(real, TEXT)
    robot = judge.score(espeak_speech(TEXT, "en-us"), TEXT)
    babble = judge.score(real[::-1].copy(), TEXT)
    assert human.wer <= 0.1 and human.cer <= 0.05, human
    assert robot.wer <= 0.4, robot
    assert babble.wer >= 0.8, babble
    assert not human.looped and not robot.looped
    # without a reference: babble decodes with clearly lower confidence than either voice
    assert babble.avg_logprob < min(human.avg_logprob, robot.avg_logprob) - 0.3, (human, robot, babble)
    assert human.avg_logprob > -0.5 and 0.0 <= human.no_speech_prob <= 1.0


def test_judge_loads_the_model_once_and_handles_edge_inputs(judge: WhisperJudge, packaged_whisper) -> None:
    assert judge.model.source == "packaged" and judge.model.pinned
    assert WhisperJudge()._whisper is judge._whisper  # one CTranslate2 model per process
    silent = judge.transcribe(np.zeros(0, np.float32))
    assert silent.transcript == "" and silent.avg_logprob == -math.inf
    with pytest.raises(ValueError, match="mono"):
        judge.transcribe(np.zeros((2, 16000), np.float32))
