"""Held-out metrics: the scoring functions on known answers, and `evaluate` end to end on a small corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_CONFIG
from test_train import _write_corpus

from vssflow_cli.train.evaluate import envelope_corr, evaluate, normalise_words, onset_f1, word_errors


def test_word_errors_and_normalisation() -> None:
    assert normalise_words("That's a Valid-number, 42!") == ["that's", "a", "valid", "number"]
    assert word_errors("the cat sat".split(), "the cat sat".split()) == 0
    assert word_errors("the cat sat".split(), "a cat sat down".split()) == 2  # one substitution, one insertion
    assert word_errors("the cat".split(), []) == 2


def test_onset_f1_matches_within_tolerance_one_to_one() -> None:
    ref = np.array([0.5, 1.0, 2.0])
    assert onset_f1(ref + 0.05, ref) == 1.0
    assert onset_f1(ref + 0.1, ref) == 0.0  # outside +-80 ms
    assert onset_f1(np.array([0.5, 0.52]), np.array([0.5])) == pytest.approx(2 / 3)  # one hit, one false alarm
    assert onset_f1(np.zeros(0), np.zeros(0)) == 1.0 and onset_f1(np.zeros(0), ref) == 0.0


def test_envelope_correlation_follows_the_aperture() -> None:
    fps, sr = 25, 16000
    aperture = (np.sin(np.linspace(0, 6 * np.pi, 100)) > 0).astype(np.float32)
    tone = np.sin(2 * np.pi * 200 * np.arange(100 * 640) / sr).astype(np.float32)
    assert envelope_corr(tone * np.repeat(aperture, 640), aperture, fps, sr) > 0.9
    assert envelope_corr(tone * np.repeat(1 - aperture, 640), aperture, fps, sr) < -0.9


def test_evaluate_end_to_end_with_controls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vssflow_cli.train import sweep
    from vssflow_cli.train.untrained import random_bundle

    corpus = _write_corpus(tmp_path / "corpus", n_speech=2, n_sound=2)
    rows = [json.loads(line) for line in (corpus / "index.jsonl").read_text().splitlines()]
    texts = iter(["thank you for calling", "goodbye"])
    rows = [{**r, "split": "test", **({"lang": "en", "text": next(texts)} if r["kind"] == "speech" else {})}
            for r in rows]
    (corpus / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bundle = random_bundle(tmp_path / "bundle", TEST_CONFIG)
    res = evaluate(str(bundle), corpus, limit=2, steps=2, device="cpu")
    assert res["precision"] == "int8"
    for part in (res["model"], res["reference"], res["controls"]["untrained"], res["controls"]["shuffled_conditions"]):
        assert part["n_speech"] == 2 and part["n_sound"] == 2
        assert set(part) >= {"wer", "onset_f1", "lip_env_corr", "transcript_id"}
        assert part["wer"] is not None and part["transcript_id"] in (0.0, 0.5, 1.0)
        assert part["transcript_id_chance"] == 0.5  # two English transcripts to choose from

    assert sweep.main(["--corpus", str(corpus), "--model", str(bundle), "--cfg", "1,3", "--steps", "1",
                       "--precision", "fp32"]) == 0  # fmt: skip
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["cfg"], r["precision"], r["n"]) for r in lines] == [(1.0, "fp32", 2), (3.0, "fp32", 2)]
    assert all(r["wer"] is not None and r["chance"] == 0.5 for r in lines)


def test_closed_set_identification_on_real_synthesised_speech() -> None:
    """pocketsphinx restricted to a set of transcripts picks the spoken one (espeak-ng speech, 16 kHz)."""
    from synth_speech import espeak_speech

    from vssflow_cli.train.evaluate import Recogniser

    sentences = ["please enter your password", "thank you for calling", "goodbye", "you have no new messages",
                 "the line is busy"]
    asr = Recogniser()
    assert asr.known("please enter your password".split()) and not asr.known(["qzxv"]) and not asr.known([])
    search = asr.closed_set(sentences)
    assert asr.closed_set(list(reversed(sentences))) == search  # one grammar per candidate set
    for s in sentences:
        assert asr(espeak_speech(s, "en-us"), search) == s
    asr(np.zeros(16000, np.float32))  # without a search: back to the open-vocabulary language model
    assert asr.decoder.current_search() == asr._default != search


def test_shuffled_prompts_come_from_another_class() -> None:
    from vssflow_cli.train.evaluate import shuffled_sources

    truth = ["city", "city", "footsteps", "weapon", "city"]
    src = shuffled_sources(truth)
    assert all(truth[j] != t for j, t in zip(src, truth))
    assert src == [2, 2, 3, 4, 2] and shuffled_sources(["a", "a"]) == [0, 1]


def test_prompt_rows_score_every_variant_with_the_sound_judge(tmp_path: Path) -> None:
    pytest.importorskip("aisfx", reason="pip install --no-deps aisfx==0.1.2")
    import dataclasses

    from vssflow_cli.runtime import Synthesizer
    from vssflow_cli.train.evaluate import HeldoutClip, prompt_rows
    from vssflow_cli.train.sound_judge import SoundJudge
    from vssflow_cli.train.untrained import random_bundle

    cfg = dataclasses.replace(TEST_CONFIG, prompt_words=("city", "footstep", "traffic", "wood"))
    synth = Synthesizer(random_bundle(tmp_path / "b", cfg, include_checkpoint=False), device="cpu", threads=1)
    rng = np.random.default_rng(0)
    n = 50

    def clip(category: str, prompt: str) -> HeldoutClip:
        conds = {"video": rng.standard_normal((n, cfg.video_dim), dtype=np.float32),
                 "sync": rng.random((n, cfg.sync_dim), dtype=np.float32),
                 "phonemes": np.zeros(n, np.int64)}  # fmt: skip
        wave = rng.normal(0, 0.1, n * cfg.audio.samples_per_latent).astype(np.float32)
        return HeldoutClip(category, "sound", "", "", wave, conds, np.zeros(0), np.zeros(n),
                           category=category, prompt=prompt)  # fmt: skip

    clips = [clip("footsteps/wood", "footsteps wood"), clip("city/traffic", "city traffic"),
             clip("silence/still", ""), clip("speech", "")]  # fmt: skip
    judge = SoundJudge()
    r = prompt_rows(synth, clips, judge, steps=1, cfg=2.0, seed=0)
    assert r["n"] == 2 and r["classes"] == {"city": 1, "footsteps": 1}  # stills and clips without a class left out
    assert r["chance"] == round(1 / len(judge.labels), 4)
    for row in ("real", "no_prompt", "own_prompt", "own_prompt_no_video", "shuffled_prompt"):
        assert 0.0 <= r[row]["accuracy"] <= 1.0 and set(r[row]["predicted"]) <= set(judge.labels)
