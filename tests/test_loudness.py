"""loudness.py: BS.1770-4 measurement against the standard, EBU Tech 3341, pyloudnorm and ffmpeg's ebur128;
the gain policy; and the levels and channel layouts of real outputs (real ffmpeg, the embedded model)."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
from conftest import H264, ffmpeg, make_clip

from vssflow_cli import loudness as L
from vssflow_cli import mux
from vssflow_cli.errors import UsageError
from vssflow_cli.media import ffmpeg_exe
from vssflow_cli.pipeline import JobOptions

SR = 48000


def tone(seconds: float, dbfs: float, freq: float = 997.0, sr: int = SR, phase: float = 0.0) -> np.ndarray:
    """A sine whose peak is ``dbfs``."""
    t = np.arange(int(round(seconds * sr))) / sr
    return 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)


def decode(path: Path, layout: L.Layout) -> np.ndarray:
    """The first audio stream as (n, channels) float64 at 48 kHz, channels in ``layout``'s order."""
    r = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", f"file:{path}", "-map", "0:a:0",
         "-af", f"aresample={SR},aformat=sample_fmts=flt:channel_layouts={layout.spec}", "-f", "f32le", "-"],
        check=True, capture_output=True,
    )  # fmt: skip
    return np.frombuffer(r.stdout, np.float32).reshape(-1, len(layout.names)).astype(np.float64)


def ffmpeg_ebur128(path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) from ffmpeg's own ebur128 filter: an independent implementation."""
    r = subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-i", f"file:{path}", "-map", "0:a:0",
         "-af", "ebur128=peak=true", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = r.stderr[r.stderr.rindex("Summary:") :]
    i = float(re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    return i, peak


def lufs(x: np.ndarray, sr: int = SR, weights: tuple[float, ...] | None = None) -> float:
    meter = L.LoudnessMeter(sr, weights or (1.0,) * (1 if x.ndim == 1 else x.shape[1]))
    meter.push(x)
    return meter.integrated()


# --------------------------------------------------------------------------- measurement


def test_k_weighting_at_48k_is_the_bs1770_table() -> None:
    """ITU-R BS.1770-4, Tables 1 and 2 (stage 1 shelf, stage 2 RLB high pass) at 48 kHz."""
    want = [[1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
            [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621]]  # fmt: skip
    assert np.allclose(L.k_weighting_sos(48000), want, atol=1e-9)


@pytest.mark.parametrize("sr", [16000, 44100, 48000])
def test_997hz_sine_in_one_channel_reads_3_01_below_its_peak(sr: int) -> None:
    """BS.1770-4 §2.1: a 0 dBFS 997 Hz sine in a front channel reads -3.01 LKFS; so -20 dBFS reads -23.01."""
    assert lufs(tone(5, -20, sr=sr), sr) == pytest.approx(-23.01, abs=0.05)


@pytest.mark.parametrize(
    "parts, want",
    [
        ([(20, -23)], -23.0),  # Tech 3341 case 1
        ([(20, -33)], -33.0),  # case 2
        ([(10, -36), (60, -23), (10, -36)], -23.0),  # case 3: relative gate
        ([(10, -72), (10, -36), (60, -23), (10, -36), (10, -72)], -23.0),  # case 4: absolute and relative gates
        ([(20, -26), (20.1, -20), (20, -26)], -23.0),  # case 5
    ],
)
def test_ebu_tech3341_stereo_cases(parts: list[tuple[float, float]], want: float) -> None:
    """EBU Tech 3341 (2016) minimum requirements: stereo 1 kHz sines at the given dBFS, +-0.1 LU."""
    x = np.concatenate([tone(s, db, 1000.0) for s, db in parts])
    assert lufs(np.stack([x, x], axis=1)) == pytest.approx(want, abs=0.1)


def bursts(seconds: float, channels: int, sr: int, seed: int) -> np.ndarray:
    """Noise in 100 ms bursts of random level: something to gate, in every channel at its own level."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 10)
    env = np.repeat(rng.random((n, channels)) ** 3, sr // 10, axis=0)
    return 0.3 * rng.standard_normal((n * (sr // 10), channels)) * env


@pytest.mark.parametrize("sr, channels", [(16000, 1), (44100, 2), (48000, 5)])
def test_matches_pyloudnorm(sr: int, channels: int) -> None:
    """Within 0.5 LU of pyloudnorm's default meter, and within 0.01 LU of its exact-coefficient ('DeMan') one.

    pyloudnorm's channel order is L, R, C, Ls, Rs (weights 1, 1, 1, 1.41, 1.41)."""
    x = bursts(12, channels, sr, seed=channels)
    ours = lufs(x, sr, (1.0, 1.0, 1.0, 1.41, 1.41)[:channels])
    assert ours == pytest.approx(pyloudnorm.Meter(sr).integrated_loudness(x), abs=0.5)
    assert ours == pytest.approx(pyloudnorm.Meter(sr, filter_class="DeMan").integrated_loudness(x), abs=0.01)


def test_chunks_give_the_same_result_as_one_push() -> None:
    x = bursts(6, 2, SR, seed=3)
    whole = L.LoudnessMeter(SR, (1.0, 1.0), true_peak=True)
    whole.push(x)
    parts = L.LoudnessMeter(SR, (1.0, 1.0), true_peak=True)
    for i in range(0, len(x), 7777):
        parts.push(x[i : i + 7777])
    a, b = parts.result(), whole.result()
    assert (a.lufs, a.true_peak_db, a.sample_peak_db) == pytest.approx((b.lufs, b.true_peak_db, b.sample_peak_db))


def test_51_weights_surrounds_and_leaves_out_the_lfe(tmp_path: Path) -> None:
    """A real 5.1 file: ours == pyloudnorm on the five full-range channels == ffmpeg's ebur128 (+-0.1 LU)."""
    exprs = "|".join(f"{a}*sin(2*PI*{f}*t)" for a, f in
                     [(0.1, 300), (0.05, 420), (0.07, 530), (0.9, 40), (0.05, 610), (0.02, 770)])  # fmt: skip
    path = tmp_path / "s51.wav"
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc={exprs}:c=5.1:s={SR}:d=4", "-c:a", "pcm_f32le", str(path))
    layout = L.audio_layout(path)
    assert layout.names == ("FL", "FR", "FC", "LFE", "BL", "BR")
    assert layout.weights == (1.0, 1.0, 1.0, 0.0, 1.41, 1.41)
    ours = L.measure_media(path, layout).lufs
    x = decode(path, layout)
    assert ours == pytest.approx(pyloudnorm.Meter(SR).integrated_loudness(x[:, [0, 1, 2, 4, 5]]), abs=0.1)
    assert ours == pytest.approx(ffmpeg_ebur128(path)[0], abs=0.1)
    x[:, 3] *= 0.0  # the loud 40 Hz LFE does not count
    assert lufs(x, SR, layout.weights) == pytest.approx(ours, abs=1e-9)


def test_true_peak_finds_the_peak_between_samples(tmp_path: Path) -> None:
    """A 4 kHz sine at 16 kHz, 45 degrees off: every sample is at -3.01 dB of the waveform's peak."""
    sr = 16000
    x = tone(2, -6, 4000.0, sr=sr, phase=math.pi / 4)
    x *= np.minimum(1, np.minimum(np.arange(len(x)), np.arange(len(x))[::-1]) / (0.1 * sr))  # no edge overshoot
    m = L.measure(x, sr)
    assert m.sample_peak_db == pytest.approx(-9.01, abs=0.01)
    assert m.true_peak_db == pytest.approx(-6.0, abs=0.15)
    path = tmp_path / "tp.wav"
    import soundfile as sf

    sf.write(str(path), x, sr, subtype="FLOAT")
    assert m.true_peak_db == pytest.approx(ffmpeg_ebur128(path)[1], abs=0.2)


def test_silence_and_too_short_tracks_have_no_loudness() -> None:
    assert L.measure(np.zeros(SR * 2), SR).lufs == -math.inf
    assert L.measure(tone(0.3, -10), SR).lufs == -math.inf  # no complete 400 ms block
    assert L.measure(tone(3, -75), SR).lufs == -math.inf  # every block under the -70 LUFS gate


# --------------------------------------------------------------------------- policy


def apply(x: np.ndarray, levels: L.Levels) -> np.ndarray:
    return x * 10 ** (levels.gain_db / 20)


@pytest.mark.parametrize("level_db", [-45.0, -30.0, -8.0])
def test_normalised_track_is_at_the_target_under_the_ceiling(level_db: float) -> None:
    x = bursts(8, 1, 16000, seed=1)[:, 0]
    x *= 10 ** ((level_db - L.measure(x, 16000).lufs) / 20)
    levels = L.plan_levels(L.measure(x, 16000), -23.0)
    after = L.measure(apply(x, levels), 16000)
    assert levels.reference == "target" and not levels.peak_limited
    assert after.lufs == pytest.approx(-23.0, abs=0.5) and after.lufs == pytest.approx(levels.output_lufs, abs=1e-6)
    assert after.true_peak_db <= L.CEILING_DBTP + 1e-6


def test_peaky_track_is_held_at_the_peak_ceiling() -> None:
    """Sparse clicks: reaching -16 LUFS would put the peaks over -1 dBTP, so the ceiling wins."""
    x = np.zeros(16000 * 4)
    x[::4000] = 0.5
    x += 1e-3 * np.random.default_rng(0).standard_normal(len(x))
    levels = L.plan_levels(L.measure(x, 16000), -16.0)
    after = L.measure(apply(x, levels), 16000)
    assert levels.peak_limited and after.lufs < -16.5
    assert after.true_peak_db == pytest.approx(L.CEILING_DBTP, abs=0.01)


@pytest.mark.parametrize("rms_db", [-60.0, -70.0, None])
def test_near_silent_track_is_not_amplified(rms_db: float | None) -> None:
    """A noise floor at the silence criterion of issue 12 (RMS <= -60 dBFS), or digital silence: gain 0."""
    noise = np.random.default_rng(0).standard_normal(16000 * 4)
    x = np.zeros_like(noise) if rms_db is None else noise * 10 ** (rms_db / 20)
    levels = L.plan_levels(L.measure(x, 16000), -23.0)
    assert levels.reference == "silence" and levels.gain_db == 0.0 and levels.target_lufs is None
    assert L.measure(apply(x, levels), 16000).lufs == L.measure(x, 16000).lufs


def test_add_sits_under_the_original_and_falls_back_to_the_target_on_silence() -> None:
    gen = L.measure(bursts(6, 1, 16000, seed=2)[:, 0], 16000)
    quiet = L.measure(tone(6, -40), SR)
    under = L.plan_levels(gen, -23.0, original=quiet)
    assert under.reference == "original" and under.output_lufs == pytest.approx(quiet.lufs + L.ADD_OFFSET_LU)
    assert L.plan_levels(gen, -23.0, original=quiet, gain_db=-12).output_lufs == pytest.approx(quiet.lufs - 12)
    silent = L.plan_levels(gen, -23.0, original=L.measure(np.zeros(SR * 6), SR))
    assert silent.reference == "target" and silent.output_lufs == pytest.approx(-23.0)


def test_upmix_puts_effects_in_front_and_speech_in_the_centre() -> None:
    s51 = L.layout_of(6, ("FL", "FR", "FC", "LFE", "BL", "BR"))
    g = f"{1 / math.sqrt(2):.8f}"
    assert L.upmix_filter(s51, speech=False) == f"pan=FL+FR+FC+LFE+BL+BR|FL={g}*c0|FR={g}*c0"
    assert L.upmix_filter(s51, speech=True) == "pan=FL+FR+FC+LFE+BL+BR|FC=1.00000000*c0"
    assert L.upmix_filter(L.layout_of(2, ("FL", "FR")), speech=True) == f"pan=FL+FR|FL={g}*c0|FR={g}*c0"
    assert L.upmix_filter(L.layout_of(1, ("FC",)), speech=False) == "pan=FC|FC=1.00000000*c0"
    assert L.layout_of(6, ("USR0",) * 6).spec == "FL+FR+FC+LFE+BL+BR"  # unnamed channels: ffmpeg's default


def test_loudness_option_is_checked() -> None:
    with pytest.raises(UsageError, match="--loudness must be between"):
        JobOptions(loudness=0.0)
    assert JobOptions(loudness=-30.0).loudness == -30.0


class _NoiseSynth:
    """A stand-in model: every window decodes to loud noise, whatever the conditions."""

    def __init__(self) -> None:
        from vssflow_cli.config import ModelConfig

        self.config = ModelConfig()
        self.rng = np.random.default_rng(0)

    def sample(self, batch, n, **kw) -> np.ndarray:
        return np.zeros((1, n, self.config.latent_channels), np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        n = latents.shape[1] * self.config.audio.samples_per_latent
        return (0.1 * self.rng.standard_normal((1, n))).astype(np.float32)


def test_dub_gate_is_applied_before_the_track_is_measured_and_levelled(tmp_path: Path) -> None:
    """The dub's SpanGate shapes the samples as they are written; the level policy then measures and scales
    that gated track: speech at the dub target inside the span, exact silence outside it."""
    import soundfile as sf

    from vssflow_cli import pipeline
    from vssflow_cli.prior import SpanGate

    sr, out = 16000, tmp_path / "gated.wav"
    info = type("Info", (), {"duration": 3.0, "has_audio": False})()

    def build(clock, progress) -> dict:
        return {"lip": np.zeros((75, 8), np.float32), "_gate": SpanGate([(1.0, 2.0)], sr, pad_s=0.1, fade_s=0.05)}

    res = pipeline._finish("dub", tmp_path / "v.mp4", out, info, JobOptions(wav_only=True), _NoiseSynth(), build,
                           pipeline._no_progress, 0.0)  # fmt: skip
    x, got_sr = sf.read(out)
    assert got_sr == sr and len(x) == 3 * sr
    assert not x[: int(0.9 * sr)].any() and not x[int(2.1 * sr) :].any()  # nothing outside the padded span
    assert np.abs(x[int(1.2 * sr) : int(1.8 * sr)]).mean() > 0.01
    assert res.levels["reference"] == "target" and res.levels["target_lufs"] == L.TARGET_LUFS["dub"]
    assert L.measure(x, sr).lufs == pytest.approx(res.levels["output_lufs"], abs=0.3)


# --------------------------------------------------------------------------- real outputs


@pytest.fixture
def embedded(cli):
    """The CLI with the embedded model (vssflow-tiny), whose foley is at about -21 LUFS before levelling."""
    cli.env.pop("VSSFLOW_MODEL")
    return cli


def test_foley_track_is_levelled_to_the_target(embedded, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "moving.mp4", 3, audio=False)
    for extra, want in (((), L.TARGET_LUFS["foley"]), (("--loudness", "-30"), -30.0)):
        out = tmp_path / f"foley{len(extra)}.wav"
        r = embedded("foley", clip, "-o", out, "--json", *extra)
        assert r.returncode == 0, r.stderr
        i, tp = ffmpeg_ebur128(out)
        assert i == pytest.approx(want, abs=0.5) and tp <= L.CEILING_DBTP + 0.1
        levels = json.loads(r.stdout)["levels"]
        assert levels["reference"] == "target" and levels["output_lufs"] == pytest.approx(want, abs=0.01)


def quiet_original(path: Path, audio: str, codec: str = "pcm_s16le") -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3",
           "-f", "lavfi", "-i", f"aevalsrc={audio}:s={SR}:d=3", *H264, "-c:a", codec, str(path))  # fmt: skip
    return path


def test_add_puts_foley_6_lu_under_a_quiet_original(embedded, tmp_path: Path) -> None:
    """Original: a 440 Hz sine at -40 dBFS (about -43.7 LUFS), lossless. The generated stem is measured in the
    output itself: decoded output minus decoded original."""
    video = quiet_original(tmp_path / "quiet.mkv", "0.01*sin(2*PI*440*t)")
    out = tmp_path / "added.mp4"
    r = embedded("foley", video, "--mix", "add", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    layout = L.audio_layout(video)
    orig, mixed = decode(video, layout), decode(out, layout)
    orig_lufs = lufs(orig)
    stem = lufs(mixed[: len(orig)] - orig[: len(mixed)])
    assert orig_lufs == pytest.approx(-43.7, abs=0.2)
    assert stem == pytest.approx(orig_lufs + L.ADD_OFFSET_LU, abs=0.5)
    assert L.audio_layout(out).names == ("FC",)  # mono stays mono
    levels = json.loads(r.stdout)["levels"]
    assert levels["reference"] == "original" and levels["original_lufs"] == pytest.approx(orig_lufs, abs=0.1)


def test_add_keeps_a_51_layout_and_puts_foley_in_front(embedded, tmp_path: Path) -> None:
    tones = "|".join(f"0.01*sin(2*PI*{f}*t)" for f in (300, 400, 500, 50, 600, 700))
    video = quiet_original(tmp_path / "q51.mkv", f"{tones}:c=5.1")
    out = tmp_path / "added51.mp4"
    r = embedded("foley", video, "--mix", "add", "-o", out)
    assert r.returncode == 0, r.stderr
    import av

    with av.open(str(out)) as c:
        (a,) = c.streams.audio
        assert (a.codec_context.channels, a.codec_context.layout.name) == (6, "5.1")
    layout = L.audio_layout(video)
    orig, mixed = decode(video, layout), decode(out, layout)
    stem = mixed[: len(orig)] - orig[: len(mixed)]
    per_channel = {name: lufs(stem[:, i]) for i, name in enumerate(layout.names) if name != "LFE"}
    assert per_channel["FL"] > -50 and per_channel["FR"] > -50, per_channel
    assert all(per_channel[c] < per_channel["FL"] - 10 for c in ("FC", "BL", "BR")), per_channel  # codec noise only
    want = L.measure_media(video, layout).lufs + L.ADD_OFFSET_LU
    assert lufs(stem, SR, layout.weights) == pytest.approx(want, abs=0.5)


@pytest.mark.parametrize("ext, codec", [(".mp4", "aac"), (".avi", "pcm_s16le")])
def test_add_puts_speech_in_the_centre_of_51(tmp_path: Path, ext: str, codec: str) -> None:
    """mux on its own (no model): the dub's track goes to the centre; an AVI gets 6-channel PCM (its one audio
    codec since issue 13.11: no encoder delay to shift the frames), which holds 5.1 as it is."""
    tones = "|".join(f"0.01*sin(2*PI*{f}*t)" for f in (300, 400, 500, 50, 600, 700))
    video = tmp_path / f"q51{ext}"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3", "-f", "lavfi",
           "-i", f"aevalsrc={tones}:c=5.1:s={SR}:d=3", "-c:v", "mpeg4" if ext == ".avi" else "libx264",
           "-c:a", "ac3" if ext == ".avi" else "aac", "-b:a", "640k", str(video))  # fmt: skip
    t = np.arange(16000 * 3) / 16000
    gen = mux.write_wav(tmp_path / "gen.wav", 0.3 * np.sin(2 * np.pi * 1000 * t), 16000)
    out = mux.mux(video, gen, tmp_path / f"out{ext}", mix="add", gain_db=-20.0, title="vssflow dub", speech=True)
    import av

    with av.open(str(out)) as c:
        (a,) = c.streams.audio
        assert a.codec_context.name == codec and a.codec_context.channels == 6
    layout = L.audio_layout(out)
    mixed = decode(out, layout)
    spec = {n: np.abs(np.fft.rfft(mixed[SR : 2 * SR, i])) for i, n in enumerate(layout.names)}
    assert spec["FC"][1000] > 50 * max(spec[n][1000] for n in layout.names if n != "FC")
