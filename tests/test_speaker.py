"""Speaker embeddings: the shipped ONNX encoder against Resemblyzer's torch network, the numpy front end
against Resemblyzer's librosa one, and what the embeddings say about real voices.

Real speech: two prompts of one speaker (Allison Smith, Debian's asterisk-core-sounds-en-g722,
CC-BY-SA-3.0; tests/data/README.md), espeak-ng speech, and a pitch-shifted copy of a prompt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from synth_speech import espeak_speech

from vssflow_cli import speaker
from vssflow_cli.errors import InputError, ModelError
from vssflow_cli.media import read_audio

DATA = Path(__file__).resolve().parent / "data"
PROMPTS = ("asterisk-en-auth-incorrect.g722", "asterisk-en-vm-rec-busy.g722")
REFERENCE = DATA / "speaker_reference.npz"


@pytest.fixture(scope="module")
def prompts() -> list[np.ndarray]:
    """The two prompts, 16 kHz mono float32."""
    return [read_audio(DATA / name) for name in PROMPTS]


def _resemblyzer():
    """Resemblyzer itself (torch network, librosa mels); only torch's absence skips."""
    pytest.importorskip("torch")
    from vssflow_cli.train.export_speaker import import_resemblyzer

    return import_resemblyzer()


def test_onnx_encoder_equals_resemblyzer_torch_network(prompts):
    import torch

    rz = _resemblyzer()
    net = rz.VoiceEncoder("cpu", verbose=False).eval()
    real = np.concatenate([speaker.partial_mels(speaker.preprocess(w, trim=False)) for w in prompts])  # (P, 160, 40)
    rng = np.random.default_rng(0)
    synthetic = rng.gamma(0.5, 2.0, (3, 160, 40)).astype(np.float32)  # power-mel-like, other scales
    for mels in (real, real[:1], synthetic, 1e-3 * synthetic):
        with torch.no_grad():
            ref = net(torch.from_numpy(mels)).numpy()
        got = speaker.encode_mels(mels)
        assert got.shape == (len(mels), speaker.EMBED_DIM) and got.dtype == np.float32
        assert np.abs(got - ref).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_json_records_the_shipped_files():
    meta = json.loads(speaker.META_PATH.read_text(encoding="utf-8"))
    assert meta["onnx_sha256"] == hashlib.sha256(speaker.MODEL_PATH.read_bytes()).hexdigest()
    assert meta["source"]["package"] == "Resemblyzer" and meta["source"]["version"] == "0.1.4"
    assert meta["licence"] == "Apache-2.0"
    licence = (speaker.DATA / meta["licence_file"]).read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0" in licence and "Copyright 2019 Resemble.AI" in licence
    assert speaker.FrontEnd(**meta["front_end"]) == speaker.FrontEnd()
    assert 5.0e6 < speaker.MODEL_PATH.stat().st_size < 6.5e6  # 1.42 M float32 weights


def test_pretrained_weights_are_the_recorded_ones():
    pytest.importorskip("torch")
    from vssflow_cli.train.export_speaker import package_dir, sha256_file

    meta = json.loads(speaker.META_PATH.read_text(encoding="utf-8"))
    assert sha256_file(package_dir() / "pretrained.pt") == meta["pretrained_sha256"]
    assert (package_dir() / "hparams.py").is_file()


@pytest.mark.slow
def test_export_reproduces_the_shipped_model(tmp_path):
    """Exporting again gives the committed bytes (same torch/onnxscript) or, with other versions, the same outputs."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    from vssflow_cli.train.export_speaker import export

    meta = export(tmp_path)
    shipped = json.loads(speaker.META_PATH.read_text(encoding="utf-8"))
    assert meta["pretrained_sha256"] == shipped["pretrained_sha256"]
    same_tools = meta["exported_with"] == shipped["exported_with"]
    if same_tools:
        assert meta["onnx_sha256"] == shipped["onnx_sha256"]
    mels = np.random.default_rng(1).gamma(0.5, 2.0, (2, 160, 40)).astype(np.float32)
    new = ort.InferenceSession(str(tmp_path / "speaker_encoder.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(new.run(["embeddings"], {"mels": mels})[0] - speaker.encode_mels(mels)).max() < 1e-5


def test_partial_slices_equal_resemblyzers():
    rz = _resemblyzer()
    for n in (0, 1, 159, 160, 161, 16000, 20800, 25599, 25600, 25601, 32123, 48000, 80000, 123456):
        _, mel_slices = rz.VoiceEncoder.compute_partial_slices(n, 1.3, 0.75)
        assert speaker.partial_starts(n) == [s.start for s in mel_slices], n


def test_mel_front_end_matches_librosa_via_resemblyzer(prompts):
    """Live comparison with Resemblyzer's ``wav_to_mel_spectrogram`` (librosa), on a prompt and on noise."""
    pytest.importorskip("librosa")
    rz = _resemblyzer()
    noise = np.random.default_rng(2).standard_normal(16000 + 77).astype(np.float32) * 0.1
    for wave in (speaker.normalize_volume(prompts[0]), noise):
        ref = rz.wav_to_mel_spectrogram(wave)
        got = speaker.mel_spectrogram(wave)
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() < 1e-5 * np.abs(ref).max()


def test_front_end_and_embedding_match_stored_resemblyzer_reference(prompts):
    """Against numbers Resemblyzer 0.1.4 computed once (tests/data/README.md): needs neither librosa nor torch."""
    ref = np.load(REFERENCE)
    got = speaker.mel_spectrogram(speaker.normalize_volume(prompts[0]))[: len(ref["mel"])]
    assert np.abs(got - ref["mel"]).max() < 1e-5 * np.abs(ref["mel"]).max()
    for wave, emb in zip(prompts, ref["embeddings"], strict=True):
        assert np.abs(speaker.embed(wave, trim=False) - emb).max() < 1e-4


def test_embedding_is_unit_norm_and_level_independent(prompts):
    a = speaker.embed(prompts[0])
    assert a.shape == (256,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    # both quiet copies are brought up to -30 dBFS before anything else
    quiet = speaker.embed(prompts[0] * 0.01)
    quieter = speaker.embed(prompts[0] * 0.001)
    assert speaker.similarity(quiet, quieter) > 0.999


def test_same_speaker_is_close_and_other_voices_are_not(prompts):
    from scipy.signal import resample_poly

    a, b = (speaker.embed(w) for w in prompts)
    same = speaker.similarity(a, b)
    assert same > 0.8  # measured 0.90
    robot = speaker.embed(espeak_speech("Please enter your password followed by the pound key.", "en-us"))
    chipmunk = speaker.embed(resample_poly(prompts[0], 4, 5).astype(np.float32))  # 1.25x faster and higher
    for other in (robot, chipmunk):
        for own in (a, b):
            assert speaker.similarity(own, other) < same - 0.15  # measured 0.46 (espeak), 0.64 (shifted)
    assert speaker.similarity(a, robot) < 0.65


def test_similarity_is_cosine():
    x = np.array([1.0, 0.0, 0.0], np.float32)
    assert speaker.similarity(x, 3 * x) == pytest.approx(1.0)
    assert speaker.similarity(x, np.array([0.0, 2.0, 0.0])) == pytest.approx(0.0)
    assert speaker.similarity(x, -x) == pytest.approx(-1.0)
    assert speaker.similarity(x, np.zeros(3)) == 0.0
    with pytest.raises(ValueError):
        speaker.similarity(x, np.ones(4))


def test_too_little_speech_is_an_input_error(prompts):
    with pytest.raises(InputError, match="s of speech; at least 0.5 s"):
        speaker.embed(np.zeros(5 * 16000, np.float32))  # 5 s of silence
    with pytest.raises(InputError, match="s of audio"):
        speaker.embed(prompts[0][:4000], trim=False)  # 0.25 s
    with pytest.raises(InputError, match="mono"):
        speaker.embed(np.stack([prompts[0], prompts[0]]))
    with pytest.raises(InputError, match="NaN"):
        speaker.embed(np.full(16000, np.nan, np.float32))


def test_tampered_model_is_a_model_error(tmp_path, monkeypatch):
    bad = tmp_path / "speaker_encoder.onnx"
    blob = bytearray(speaker.MODEL_PATH.read_bytes())
    blob[-1] ^= 1
    bad.write_bytes(bytes(blob))
    monkeypatch.setattr(speaker, "MODEL_PATH", bad)
    speaker._encoder.cache_clear()
    try:
        with pytest.raises(ModelError, match="sha256 mismatch"):
            speaker.embed(np.random.default_rng(0).standard_normal(16000).astype(np.float32), trim=False)
    finally:
        speaker._encoder.cache_clear()


def test_package_data_ships_the_encoder():
    """pyproject's package-data globs for vssflow_cli take the model, its json and licence into the wheel."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["vssflow_cli"]
    for path in (speaker.MODEL_PATH, speaker.META_PATH, speaker.DATA / "speaker_encoder.LICENSE"):
        rel = path.relative_to(Path(speaker.__file__).resolve().parent).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


def write_reference() -> None:
    """Write tests/data/speaker_reference.npz with Resemblyzer's own code (needs librosa and torch)."""
    from vssflow_cli.train.export_speaker import import_resemblyzer

    rz = import_resemblyzer()
    enc = rz.VoiceEncoder("cpu", verbose=False)
    waves = [rz.normalize_volume(read_audio(DATA / n), -30, increase_only=True) for n in PROMPTS]
    np.savez_compressed(
        REFERENCE,
        mel=rz.wav_to_mel_spectrogram(waves[0])[:100],
        embeddings=np.stack([enc.embed_utterance(w) for w in waves]).astype(np.float32),
        librosa_version=np.array(importlib.metadata.version("librosa")),
    )


if __name__ == "__main__" and sys.argv[1:] == ["--write-reference"]:
    write_reference()
