"""The sound category judge: label table, aisfx weights checked before loading, the shipped probe on real inputs.

Real model (aisfx 0.1.2's embedding CNN) and the shipped probe in ``weights/judges/sound-category/``; no corpus.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vssflow_cli.bundle import file_sha256
from vssflow_cli.train import sound_judge as sj

pytest.importorskip("aisfx", reason="pip install --no-deps aisfx==0.1.2")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def judge() -> sj.SoundJudge:
    import torch

    torch.set_num_threads(1)
    return sj.SoundJudge()


def test_labels() -> None:
    assert sj.judge_label("footsteps/tile") == "footsteps"
    assert sj.judge_label("Footsteps/Water-In ") == "footsteps"
    assert sj.judge_label("animals/cow") == "animal"
    assert sj.judge_label("seasonal/blackcat") == "animal"  # override of a whole category
    assert sj.judge_label("keyboard") == "keyboard"  # a category without "/"
    assert sj.judge_label("break/glass") == sj.judge_label("door/open") == "objects"
    assert sj.judge_label("horn") == sj.judge_label("hobbies/violin") == "music"
    # Wesnoth's battle/*: spells, cries (human or not), everything else is a weapon or blow
    assert sj.judge_label("battle/magic-holy") == "magic"
    assert sj.judge_label("battle/orc-hit") == sj.judge_label("battle/wolf-growl") == "creature"
    assert sj.judge_label("battle/human-female-die") == sj.judge_label("voice/scream") == "voice"
    assert sj.judge_label("battle/sword") == sj.judge_label("battle/squishy-hit") == "weapon"
    for none in ("silence/still", "silence", "", "battle/open-chest", "symbols/happy", "nosuchprefix/x"):
        assert sj.judge_label(none) is None


def test_source_key() -> None:
    assert sj.source_key("ufo-footsteps-tile1-c0") == "ufo-footsteps-tile1"
    assert sj.source_key("wes-magic-c12") == "wes-magic"
    assert sj.source_key("lin-coal") == "lin-coal"


def test_blocks() -> None:
    short = sj.blocks(np.ones((30, sj.N_MELS), np.float32))
    assert short.shape == (1, sj.BLOCK, sj.N_MELS) and short[0, 30:].sum() == 0  # zero-padded single block
    assert sj.blocks(np.ones((260, sj.N_MELS), np.float32)).shape == (4, sj.BLOCK, sj.N_MELS)  # 0, 50, 100, 150


def test_shipped_probe_matches_manifest() -> None:
    manifest = json.loads((sj.JUDGE_DIR / sj.MANIFEST_FILE).read_text())
    probe = sj.JUDGE_DIR / sj.PROBE_FILE
    assert file_sha256(probe, cache=False) == manifest["probe_sha256"]
    assert probe.stat().st_size < 300_000
    assert manifest["embedding"]["sha256"] == sj.AISFX_SHA256
    assert len(manifest["labels"]) >= 10 and manifest["labels"] == sorted(manifest["labels"])
    assert all(sj.judge_label(k) is not None or k in manifest["labels"] for k in manifest["labels"])


def test_refuses_corrupted_aisfx_weights(tmp_path) -> None:
    bad = tmp_path / "checkpoint.pth"
    shutil.copyfile(sj.aisfx_weights_path(), bad)
    with open(bad, "r+b") as f:
        f.seek(1 << 20)
        byte = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(RuntimeError, match="sha256"):
        sj.load_embedding_net(bad)
    with pytest.raises(RuntimeError, match="refusing"):
        sj.SoundJudge(aisfx_weights=bad)


def test_refuses_probe_with_wrong_sha(tmp_path) -> None:
    for name in (sj.PROBE_FILE, sj.MANIFEST_FILE):
        shutil.copyfile(sj.JUDGE_DIR / name, tmp_path / name)
    manifest = json.loads((tmp_path / sj.MANIFEST_FILE).read_text())
    manifest["probe_sha256"] = "0" * 64
    (tmp_path / sj.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="sha256"):
        sj.SoundJudge(tmp_path)


def test_predicts_a_label_on_synthetic_sound(judge: sj.SoundJudge) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(3 * sj.SAMPLE_RATE) / sj.SAMPLE_RATE
    clicks = np.zeros_like(t)
    clicks[(np.arange(12) * 0.25 * sj.SAMPLE_RATE).astype(int)] = 1.0  # a click train over noise and a hum
    wave = (0.3 * np.convolve(clicks, np.exp(-np.arange(400) / 40.0))[: len(t)] + 0.05 * rng.standard_normal(len(t))
            + 0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # fmt: skip
    emb = judge.embed(wave)
    assert emb.shape == (sj.EMBED_DIM,) and np.isfinite(emb).all() and emb.std() > 0
    label, probs = judge.predict(wave)
    assert label in judge.labels and set(probs) == set(judge.labels)
    assert abs(sum(probs.values()) - 1.0) < 1e-4 and probs[label] == max(probs.values())
    assert judge.predict(wave) == (label, probs)  # deterministic
    # 16 kHz in at any length: shorter than one block, and silence, still give a valid answer
    assert judge.predict(wave[:3000])[0] in judge.labels
    assert judge.predict(np.zeros(8000, np.float32))[0] in judge.labels
    # level does not matter (peak-normalised before the embedding)
    assert np.allclose(judge.embed(0.1 * wave), emb, atol=1e-3)
