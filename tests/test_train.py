"""Training plumbing: feature-level mixing, resume state, and a real two-process DDP (gloo) run on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from vssflow_cli.config import tiny_config
from vssflow_cli.train.dataset import WindowSampler, fit_codec, load_clips

CFG = tiny_config()
SPL = CFG.audio.samples_per_latent


def _write_corpus(root: Path, n_speech: int = 3, n_sound: int = 3) -> Path:
    """A small corpus in the builder's format: tones for 'speech' (with phonemes/lips), clicks for 'sound'."""
    (root / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_speech + n_sound):
        kind = "speech" if i < n_speech else "sound"
        t = int(rng.integers(30, 60))
        time = np.arange(t * SPL) / 16000
        if kind == "speech":
            wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * time) * (np.sin(2 * np.pi * 3 * time) > 0)
            ph = np.repeat(np.arange(3, 3 + t // 3 + 1), 3)[:t]
            lip = np.tile(np.linspace(0, 1, CFG.lip_dim, dtype=np.float32), (t, 1))
        else:
            wave = np.zeros_like(time)
            for on in rng.integers(0, t * SPL - 800, size=3):
                wave[on : on + 800] = rng.normal(0, 0.5, 800) * np.exp(-np.arange(800) / 150)
            ph = np.zeros(t, np.int64)
            lip = np.zeros((t, CFG.lip_dim), np.float32)
        tensors = {
            "wave": wave.astype(np.float32),
            "video": rng.normal(size=(t, CFG.video_dim)).astype(np.float32),
            "sync": rng.random((t, CFG.sync_dim)).astype(np.float32),
            "lip": lip,
            "phonemes": ph.astype(np.int64),
        }
        cid = f"{kind}{i}"
        save_file(tensors, str(root / "clips" / f"{cid}.safetensors"), metadata={"kind": kind})
        rows.append({"id": cid, "kind": kind, "split": "train", "duration": t / 25})
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus"))


def test_mixing_modes_shift_conditions_with_the_speech(corpus: Path) -> None:
    clips = load_clips(corpus, "train", CFG.window_frames)
    codec = fit_codec(clips, CFG)
    sampler = WindowSampler(clips, CFG, codec, mode_probs={"insert": 1.0})
    item = sampler(np.random.default_rng(1))
    assert item["latent"].shape == (CFG.window_frames, CFG.latent_channels)
    spoken = np.flatnonzero(item["phonemes"])
    assert len(spoken) > 0
    # lips are present exactly over the (contiguous) speech span, and zero elsewhere
    lip_on = np.flatnonzero(np.abs(item["lip"]).sum(1) > 0)
    assert lip_on.min() <= spoken.min() and lip_on.max() >= spoken.max()
    outside = np.setdiff1d(np.arange(CFG.window_frames), np.arange(lip_on.min(), lip_on.max() + 1))
    assert np.all(item["lip"][outside] == 0)
    for mode in ("speech", "sound", "add"):
        it = WindowSampler(clips, CFG, codec, mode_probs={mode: 1.0})(np.random.default_rng(2))
        assert it["mode"] == mode
        assert (it["phonemes"] > 0).any() == (mode != "sound")


def test_add_mode_sums_video_features_over_the_span(corpus: Path) -> None:
    clips = load_clips(corpus, "train", CFG.window_frames)
    codec = fit_codec(clips, CFG)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    add = WindowSampler(clips, CFG, codec, mode_probs={"add": 1.0})(rng_a)
    ins = WindowSampler(clips, CFG, codec, mode_probs={"insert": 1.0})(rng_b)
    span = np.flatnonzero(add["phonemes"])
    # same draws: identical outside the span; inside, add = background + speech, insert = speech only
    assert not np.allclose(add["video"][span], ins["video"][span])
    outside = np.setdiff1d(np.arange(CFG.window_frames), span)
    np.testing.assert_allclose(add["sync"][outside], ins["sync"][outside])


def _run_fit(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "vssflow_cli.train.fit", "--corpus", str(corpus), "--out", str(out),
        "--set", "width=64", "--set", "depth=2", "--set", "heads=2", "--set", "ffn_hidden=128",
        "--set", "cross_dim=64", "--batch", "4", "--warmup", "2", "--save-every", "2", "--threads", "1", *extra,
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_fit_resumes_from_safetensors_state(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = _run_fit(corpus, out, "--steps", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "state.safetensors").exists() and (out / "ema.safetensors").exists()
    from vssflow_cli.train.module import load_state

    _, step, model_sd, _, _, opt = load_state(out / "state.safetensors")
    assert step == 4 and opt is not None
    r = _run_fit(corpus, out, "--steps", "6")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr
    _, step2, model_sd2, _, _, _ = load_state(out / "state.safetensors")
    assert step2 == 6
    changed = any(not np.array_equal(model_sd[k].numpy(), model_sd2[k].numpy()) for k in model_sd)
    assert changed


def test_fit_init_starts_a_new_run_from_a_checkpoint(corpus: Path, tmp_path: Path) -> None:
    from vssflow_cli.model.checkpoint import load_checkpoint
    from vssflow_cli.train.module import load_state

    first = tmp_path / "first"
    assert _run_fit(corpus, first, "--steps", "3").returncode == 0
    ck = load_checkpoint(first / "ema.safetensors")
    out = tmp_path / "tuned"
    r = _run_fit(corpus, out, "--steps", "2", "--init", str(first / "ema.safetensors"), "--speech-weight", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "starting from the weights and codec of" in r.stderr
    config, step, model_sd, _, codec, _ = load_state(out / "state.safetensors")
    assert step == 2 and config == ck.config  # a new run: its own step count, the checkpoint's config
    meta = load_checkpoint(out / "ema.safetensors").metadata
    assert meta["step"] == "2" and meta["init_step"] == "3" and len(meta["init_from"]) == 64  # the chain's total
    first_codec = {k: v.numpy() for k, v in ck.extra.items() if k.startswith("codec.")}
    assert all(np.array_equal(first_codec[k], v) for k, v in codec.to_tensors().items())  # same latent space
    # two steps at a warm-up learning rate move the weights only a little away from the checkpoint's
    ref = ck.model.state_dict()
    diff = sum(float((model_sd[k] - ref[k]).square().sum()) for k in ref) ** 0.5
    rel = diff / sum(float(ref[k].square().sum()) for k in ref) ** 0.5
    assert 0 < rel < 0.05, rel


def test_speech_weights_draw_english_more_often(corpus: Path) -> None:
    from vssflow_cli.train.fit import speech_weights

    rows = [json.loads(x) for x in (corpus / "index.jsonl").read_text().splitlines()]
    langs = {r["id"]: ("en" if r["id"] == "speech0" else "fr") for r in rows if r["kind"] == "speech"}
    tagged = corpus.parent / "tagged"
    (tagged / "clips").mkdir(parents=True, exist_ok=True)
    for r in rows:
        name = f"{r['id']}.safetensors"
        (tagged / "clips" / name).write_bytes((corpus / "clips" / name).read_bytes())
    (tagged / "index.jsonl").write_text("".join(json.dumps({**r, "lang": langs.get(r["id"])}) + "\n" for r in rows))
    clips = load_clips(tagged, "train", CFG.window_frames)
    assert [c.lang for c in clips if c.kind == "speech"] == ["en", "fr", "fr"]
    assert speech_weights(clips, 1.0) is None
    w = speech_weights(clips, 4.0)
    assert w == {"speech0": 4.0, "speech1": 1.0, "speech2": 1.0}
    sampler = WindowSampler(clips, CFG, fit_codec(clips, CFG), speech_weights=w)
    rng = np.random.default_rng(0)
    drawn = [sampler._speech(rng).clip_id for _ in range(3000)]
    assert abs(drawn.count("speech0") / 3000 - 4 / 6) < 0.03


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    r = _run_fit(corpus, out, "--steps", "3", "--devices", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    from vssflow_cli.train.module import load_state

    _, step, _, _, _, _ = load_state(out / "state.safetensors")
    assert step == 3


def test_speech_windows_take_the_head_prior_half_the_time(corpus: Path, tmp_path: Path) -> None:
    """Where ``priors --head`` built a second prior, a speech window carries it with p = HEAD_PRIOR_P, else the
    full teacher's; a clip without one always carries its own."""
    from vssflow_cli.train.dataset import HEAD_PRIOR_P

    root = tmp_path / "with-priors"
    (root / "priors").mkdir(parents=True)
    (root / "clips").symlink_to(corpus / "clips")
    (root / "index.jsonl").write_bytes((corpus / "index.jsonl").read_bytes())
    k, n_mels = CFG.audio.mel_per_latent, CFG.audio.n_mels
    for cid, frames in (("speech0", 60), ("speech1", 60)):
        save_file({"prior_mel": np.full((frames * k, n_mels), -2.0, np.float16)},
                  str(root / "priors" / f"{cid}.safetensors"))
    head = np.full((60 * k, n_mels), -6.0, np.float16)
    save_file({"prior_mel": head}, str(root / "priors" / "speech0.head.safetensors"))
    clips = {c.clip_id: c for c in load_clips(root, "train", CFG.window_frames)}
    assert clips["speech0"].prior_mel_head is not None and clips["speech1"].prior_mel_head is None
    sampler = WindowSampler(list(clips.values()), CFG, fit_codec(list(clips.values()), CFG))
    rng = np.random.default_rng(0)
    seen = {"speech0": [], "speech1": []}
    for _ in range(400):
        for cid in seen:
            item = sampler._empty()
            sampler._place(item, clips[cid], 0, 1.0, rng)
            seen[cid].append(float(item["prior_mel"][0, 0]))
    assert set(seen["speech1"]) == {-2.0}
    head_share = np.mean(np.array(seen["speech0"]) == -6.0)
    assert set(seen["speech0"]) == {-2.0, -6.0} and abs(head_share - HEAD_PRIOR_P) < 0.07
