"""Audio representation: STFT round trip, latent codec, its ONNX decoder, and Griffin-Lim on real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vssflow_cli.audio import LatentCodec, griffin_lim, istft, log_mel, stft
from vssflow_cli.config import AudioConfig

CFG = AudioConfig()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Real speech from espeak-ng (the library espeakng-loader ships), 16 kHz."""
    from synth_speech import espeak_speech

    wave = espeak_speech("The quick brown fox jumps over the lazy dog.", "en-us", sample_rate=16000)
    n = len(wave) // CFG.samples_per_latent * CFG.samples_per_latent
    return np.asarray(wave[:n], dtype=np.float32)


def test_stft_istft_round_trip() -> None:
    wave = np.random.default_rng(0).normal(0, 0.3, 16000 * 2).astype(np.float32)
    spec = stft(wave, CFG)
    assert spec.shape == (len(wave) // CFG.hop, CFG.n_fft // 2 + 1)
    np.testing.assert_allclose(istft(spec, CFG, len(wave)), wave, atol=1e-5)


def test_log_mel_frames_align_with_latent_frames(speech: np.ndarray) -> None:
    mel = log_mel(speech, CFG)
    assert mel.shape == (len(speech) // CFG.hop, CFG.n_mels)
    assert len(mel) % CFG.mel_per_latent == 0


def test_codec_round_trip_and_onnx_decoder(speech: np.ndarray, tmp_path: Path) -> None:
    mel = log_mel(speech, CFG)
    full = LatentCodec.fit([mel], channels=CFG.n_mels * CFG.mel_per_latent)
    np.testing.assert_allclose(full.decode(full.encode(mel)), mel, atol=1e-3)  # all components: lossless
    codec = LatentCodec.fit([mel], channels=32)
    z = codec.encode(mel)
    assert z.shape == (len(mel) // 4, 32)
    assert 0.5 < float(z.std()) < 2.0  # the global scale gives unit variance on average
    assert codec.explained_variance([mel]) > 0.95
    restored = LatentCodec.from_tensors(codec.to_tensors())
    np.testing.assert_array_equal(restored.decode(z), codec.decode(z))
    path = codec.to_onnx(tmp_path / "decoder.onnx", n_mels=CFG.n_mels)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(["logmel"], {"latent": np.stack([z, z[::-1]])})
    np.testing.assert_allclose(out[0], codec.decode(z), atol=1e-4)
    np.testing.assert_allclose(out[1], codec.decode(z[::-1]), atol=1e-4)


def test_griffin_lim_rebuilds_the_spectrogram_of_real_speech(speech: np.ndarray) -> None:
    mel = log_mel(speech, CFG)
    rebuilt = griffin_lim(mel, CFG, iters=32)
    assert rebuilt.shape == speech.shape
    loud = mel > np.log(1e-2)  # compare where there is signal; the floor is arbitrary
    err_gl = np.abs(log_mel(rebuilt, CFG) - mel)[loud].mean()
    noise = np.random.default_rng(0).normal(0, speech.std(), len(speech)).astype(np.float32)
    err_noise = np.abs(log_mel(noise, CFG) - mel)[loud].mean()
    assert err_gl < 0.5 and err_gl < err_noise / 3
