"""The acoustic prior of dubbing: DTW, warps, the dub prior track, the speech gate and the TTS teacher."""

from __future__ import annotations

import numpy as np
import pytest

from vssflow_cli.audio import log_mel
from vssflow_cli.config import AudioConfig
from vssflow_cli.prior import (
    SILENCE_LOGMEL,
    SpanGate,
    align_to_speech,
    dtw_path,
    dub_prior,
    speaking_rate_warnings,
    speech_window,
    time_stretch,
)


def _naive_dtw_cost(a: np.ndarray, b: np.ndarray) -> float:
    c = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    d = np.full((len(a) + 1, len(b) + 1), np.inf)
    d[0, 0] = 0
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i, j] = c[i - 1, j - 1] + min(d[i - 1, j - 1], d[i - 1, j], d[i, j - 1])
    return float(d[-1, -1])


@pytest.mark.parametrize("n,m", [(12, 19), (25, 25), (30, 11)])
def test_dtw_path_is_optimal_and_monotonic(n: int, m: int) -> None:
    rng = np.random.default_rng(n * m)
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    path = dtw_path(a, b, band=10.0)  # band wider than the matrix: the unconstrained optimum
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (n - 1, m - 1)
    steps = np.diff(path, axis=0)
    assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(1) >= 1).all()
    cost = np.sqrt(((a[path[:, 0]] - b[path[:, 1]]) ** 2).sum(-1)).sum()
    assert cost == pytest.approx(_naive_dtw_cost(a, b), rel=1e-9)


def test_dtw_recovers_a_known_time_warp() -> None:
    # b is a with its first half slowed 2x: the path must map b's frames back to where they came from
    t = np.linspace(0, 6 * np.pi, 80)
    a = np.stack([np.sin(t), np.cos(1.7 * t)], 1)
    src = np.concatenate([np.repeat(np.arange(40), 2), np.arange(40, 80)])  # b[j] = a[src[j]]
    b = a[src]
    path = dtw_path(a, b)
    mapped = np.zeros(len(b))
    np.maximum.at(mapped, path[:, 1], path[:, 0])
    assert np.abs(mapped - src).max() <= 1


def test_align_to_speech_follows_the_target_timing() -> None:
    cfg = AudioConfig()
    sr = cfg.sample_rate
    rng = np.random.default_rng(0)

    def tones(durations: list[float]) -> np.ndarray:  # distinct "syllables": tones of changing pitch
        parts = [np.sin(2 * np.pi * f * np.arange(int(d * sr)) / sr) * 0.3 for f, d in zip((300, 900, 500, 1500),
                                                                                              durations)]
        return np.concatenate(parts).astype(np.float32) + rng.normal(0, 1e-3, sum(len(p) for p in parts))

    fast, slow = tones([0.2, 0.2, 0.2, 0.2]), tones([0.5, 0.15, 0.35, 0.3])
    mf, ms = log_mel(fast, cfg), log_mel(slow, cfg)
    warped = align_to_speech(mf, ms)
    assert warped.shape == ms.shape
    naive = np.stack([mf[int(i)] for i in np.linspace(0, len(mf) - 1, len(ms))])
    err_dtw, err_naive = np.abs(warped - ms).mean(), np.abs(naive - ms).mean()
    assert err_dtw < 0.6 * err_naive


def test_time_stretch_keeps_pitch_level_and_length() -> None:
    sr = 16000
    tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr)).astype(np.float32)
    for n in (9000, 16000, 24000):
        y = time_stretch(tone, n)
        assert y.shape == (n,) and y.dtype == np.float32
        peak_hz = np.fft.rfftfreq(n, 1 / sr)[np.argmax(np.abs(np.fft.rfft(y)))]
        assert abs(peak_hz - 200) < 2  # resampling would move it to 200 * 16000 / n
        assert np.sqrt(np.mean(y[800:-800] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.03)  # periods join in phase


@pytest.mark.parametrize("n_in, n_out", [(16000, 1600), (16000, 400), (1600, 16000), (300, 5000), (5000, 300), (1, 7)])
def test_time_stretch_takes_any_rate(n_in: int, n_out: int) -> None:
    """A reading far longer or shorter than its span (a long line on a short cue) still fits, finite and quiet."""
    x = (0.3 * np.sin(2 * np.pi * 180 * np.arange(n_in) / 16000)).astype(np.float32)
    y = time_stretch(x, n_out)
    assert y.shape == (n_out,) and np.isfinite(y).all() and np.abs(y).max() < 1.0


def test_time_stretch_moves_bursts_to_the_stretched_times() -> None:
    sr, rng = 16000, np.random.default_rng(0)
    x = np.zeros(sr, np.float32)
    for at in range(1000, sr - 1000, 3200):  # a 20 ms "consonant" every 200 ms
        x[at : at + 320] = rng.normal(0, 0.3, 320)
    y = time_stretch(x, int(1.5 * sr))
    env = np.sqrt(np.convolve(y**2, np.ones(80) / 80, mode="same"))
    loud = env > 0.1
    starts = np.flatnonzero(np.diff(loud.astype(int)) == 1)
    groups = starts[np.diff(starts, prepend=-10**6) > 1600]  # WSOLA may repeat a burst within a frame or two
    assert len(groups) == 5
    assert np.allclose(np.diff(groups), 4800, atol=400)  # 200 ms apart became 300 ms
    assert abs(groups[0] - 1500) < 400


def test_dub_prior_stretches_readings_whatever_the_lips_do() -> None:
    cfg = AudioConfig()
    rng = np.random.default_rng(1)
    reading = (rng.normal(0, 0.1, 20000) * np.repeat(rng.random(25) > 0.4, 800)).astype(np.float32)
    lip = np.zeros((125, 8), np.float32)
    lip[:, 0] = 1.0
    lip[25:40, 1] = lip[60:62, 1] = 1.0  # uneven mouth openings inside the span
    with_lips, where = dub_prior([(1.0, 2.5, "x")], [reading], lip, 125, cfg, 25)
    no_face, _ = dub_prior([(1.0, 2.5, "x")], [reading], None, 125, cfg, 25)
    assert where == [(1.0, 2.5)]
    np.testing.assert_array_equal(with_lips, no_face)
    expect = log_mel(time_stretch(reading, 150 * cfg.hop), cfg)
    np.testing.assert_allclose(with_lips[100:250], expect, atol=1e-5)


def test_dub_prior_stretches_a_log_mel_reading_by_its_frames() -> None:
    """A reading given as log-mel (the teacher's head) is laid over the same window as its wave would be, its frames
    resampled: a ramp of 100 frames stretched to the 150 of a 1.5 s span stays a ramp, first and last frames kept."""
    cfg = AudioConfig()
    mel = np.repeat(np.linspace(-8.0, -1.0, 100, dtype=np.float32)[:, None], cfg.n_mels, axis=1)
    track, where = dub_prior([(1.0, 2.5, "x")], [mel], None, 125, cfg, 25)
    assert where == [(1.0, 2.5)]
    body = track[100:250, 0]
    np.testing.assert_allclose(body, np.linspace(-8.0, -1.0, 150), atol=1e-5)
    assert (track[:100] == SILENCE_LOGMEL).all() and (track[250:] == SILENCE_LOGMEL).all()


def test_speech_window_keeps_readings_natural_in_long_spans() -> None:
    assert speech_window(1.0, 3.0, 1.8, None, 25) == (1.0, 3.0)
    s, e = speech_window(0.0, 10.0, 2.0, None, 25)
    assert (s, e) == (0.0, pytest.approx(3.0))
    lip = np.zeros((250, 8), np.float32)
    lip[:, 0] = 1.0
    lip[100:150, 1] = 1.0  # the mouth opens at 4 s
    s, e = speech_window(0.0, 10.0, 2.0, lip, 25)
    assert 3.8 < s < 4.05 and e == pytest.approx(s + 3.0)


def test_dub_prior_is_silent_outside_the_segments() -> None:
    cfg = AudioConfig()
    reading = (np.sin(2 * np.pi * 220 * np.arange(16000) / 16000) * 0.3).astype(np.float32)
    track, where = dub_prior([(1.0, 2.0, "hello"), (3.0, 3.5, "x")], [reading, reading], None, 125, cfg, 25)
    assert track.shape == (500, cfg.n_mels)
    assert where == [(1.0, 2.0), (3.0, 3.5)]
    loud = track.max(1) > SILENCE_LOGMEL + 1
    assert loud[100:200].mean() > 0.9 and loud[300:350].mean() > 0.9
    assert not loud[:100].any() and not loud[200:300].any() and not loud[350:].any()


def test_speaking_rate_warning_names_the_span_and_rate() -> None:
    assert speaking_rate_warnings([(0.0, 2.0, "one two three four five")]) == []
    (msg,) = speaking_rate_warnings([(1.0, 2.0, "one two three four five six seven eight")])
    assert "1.0-2.0 s" in msg and "8.0 words/s" in msg


def test_span_gate_zeroes_outside_spans_chunk_by_chunk() -> None:
    sr = 1000
    gate = SpanGate([(1.0, 2.0)], sr, pad_s=0.1, fade_s=0.05)
    x = np.ones(3000, np.float32)
    whole = gate(x, 0)
    pieces = np.concatenate([gate(x[i : i + 700], i) for i in range(0, 3000, 700)])
    np.testing.assert_allclose(whole, pieces)
    assert whole[:850].max() == 0 and whole[2150:].max() == 0
    assert whole[1000:2000].min() == 1.0


def test_teacher_reads_text_and_rebuilds_a_damaged_cache(tmp_path, monkeypatch) -> None:
    from vssflow_cli import teacher as T

    if not T.available():
        pytest.skip("the tts extra (kokoro packages) is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = T.kokoro_model_path()
    assert T._sha256_file(path) == T.KOKORO_SHA256
    path.write_bytes(b"not a model")  # damaged: verified again (size changed), rebuilt from the parts
    path = T.kokoro_model_path()
    assert T._sha256_file(path) == T.KOKORO_SHA256
    wave = T.KokoroTeacher(threads=1).speak("Hello there.", "en-us")
    assert 0.4 < len(wave) / 16000 < 3.0
    assert 0.02 < float(np.sqrt(np.mean(wave**2))) < 0.5


def test_warm_start_begins_on_the_path_to_the_guess() -> None:
    from vssflow_cli.sampler import sample

    rng = np.random.default_rng(0)
    guess = rng.normal(size=(1, 10, 4)).astype(np.float32)
    noise = rng.normal(size=(1, 10, 4)).astype(np.float32)

    def still(x, t, conds):  # a network that moves nothing: the result is where the ODE started
        return np.zeros_like(x)

    def to_data(x, t, conds):  # the exact OT velocity towards `target` from wherever the state is
        return (target - x) / np.maximum(1.0 - t[:, None, None], 1e-3)

    res = sample(still, {}, (1, 10, 4), steps=4, cfg=1.0, x0=noise, start=guess, t_start=0.9)
    np.testing.assert_allclose(res.x, 0.1 * noise + 0.9 * guess, rtol=1e-5, atol=1e-6)
    target = guess + 1.0
    res = sample(to_data, {}, (1, 10, 4), solver="euler", steps=8, cfg=1.0, x0=noise, start=guess, t_start=0.5)
    np.testing.assert_allclose(res.x, target, atol=1e-4)
    with pytest.raises(ValueError, match="fixed-step"):
        sample(still, {}, (1, 10, 4), solver="dopri5", x0=noise, start=guess, t_start=0.5)
