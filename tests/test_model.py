"""The torch DiT, flow-matching loss, condition dropout and checkpoints (CPU, small configs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from small_model import SMALL, SMALL_SPK

from vssflow_cli.config import ModelConfig, paper_config, tiny_config
from vssflow_cli.errors import ModelError
from vssflow_cli.model.checkpoint import load_checkpoint, save_checkpoint
from vssflow_cli.model.dit import VSSFlowDiT, count_parameters, step_flops
from vssflow_cli.model.flow import drop_conditions, flow_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(cfg: ModelConfig, seed: int = 0) -> VSSFlowDiT:
    """A model whose zero-initialised output layer is randomised, so outputs depend on inputs."""
    torch.manual_seed(seed)
    model = VSSFlowDiT(cfg).eval()
    torch.nn.init.normal_(model.out_proj.weight, std=0.05)
    return model


def inputs(cfg: ModelConfig, B: int, T: int, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    out = {
        "x": torch.from_numpy(rng.standard_normal((B, T, cfg.latent_channels), dtype=np.float32)),
        "t": torch.from_numpy(rng.random(B, dtype=np.float32)),
        "phonemes": torch.from_numpy(rng.integers(1, cfg.phoneme_vocab, (B, T))),
        "lip": torch.from_numpy(rng.standard_normal((B, T, cfg.lip_dim), dtype=np.float32)),
        "sync": torch.from_numpy(rng.standard_normal((B, T, cfg.sync_dim), dtype=np.float32)),
        "video": torch.from_numpy(rng.standard_normal((B, T, cfg.video_dim), dtype=np.float32)),
    }
    if cfg.speaker_dim:
        out["speaker"] = torch.from_numpy(rng.standard_normal((B, cfg.speaker_dim), dtype=np.float32))
    return out


def as_sound_only(d: dict[str, torch.Tensor], i: int) -> None:
    d["phonemes"][i] = 0
    d["lip"][i] = 0
    if "speaker" in d:
        d["speaker"][i] = 0


def as_speech_only(d: dict[str, torch.Tensor], i: int) -> None:
    d["video"][i] = 0


@pytest.mark.parametrize("cfg", [SMALL, SMALL_SPK], ids=["no-speaker", "speaker"])
def test_mixed_batch_shapes_and_sample_independence(cfg: ModelConfig) -> None:
    model = make_model(cfg)
    B, T = 3, 20
    d = inputs(cfg, B, T)
    as_sound_only(d, 0)  # foley: no phonemes, no lips
    as_speech_only(d, 1)  # speech: no video
    # row 2: both
    with torch.no_grad():
        v = model(**d)
        assert v.shape == (B, T, cfg.latent_channels) and v.dtype == torch.float32
        assert torch.isfinite(v).all()
        for i in range(B):  # each row equals its own batch-of-one run: no leakage across the batch
            vi = model(**{k: x[i : i + 1] for k, x in d.items()})
            torch.testing.assert_close(v[i : i + 1], vi, atol=1e-5, rtol=1e-4)


def test_every_condition_reaches_the_output() -> None:
    model = make_model(SMALL_SPK)
    d = inputs(SMALL_SPK, 1, 12)
    with torch.no_grad():
        base = model(**d)
        for name in ("x", "t", "phonemes", "lip", "sync", "video", "speaker"):
            e = dict(d)
            e[name] = torch.zeros_like(d[name]) if name != "t" else d["t"] * 0.5
            assert (model(**e) - base).abs().max() > 1e-4, f"{name} has no effect"


def test_untrained_output_is_zero_and_phoneme_zero_is_zero_vector() -> None:
    model = VSSFlowDiT(SMALL)
    d = inputs(SMALL, 2, 10)
    with torch.no_grad():
        assert torch.count_nonzero(model(**d)) == 0  # zero-init output projection
    assert torch.count_nonzero(model.phoneme_emb.weight[0]) == 0
    assert torch.count_nonzero(model.phoneme_emb.weight[1:]) > 0


def test_frame_mask_matches_unpadded_run() -> None:
    model = make_model(SMALL_SPK)
    T, pad = 10, 6
    full = inputs(SMALL_SPK, 2, T + pad, seed=1)  # the padded frames hold garbage
    mask = torch.ones(2, T + pad, dtype=torch.bool)
    mask[:, T:] = False
    short = {k: (v[:, :T] if v.dim() >= 2 and k != "speaker" else v) for k, v in full.items()}
    with torch.no_grad():
        v_pad = model(**full, frame_mask=mask)[:, :T]
        v_short = model(**short)
        unmasked = model(**full)[:, :T]
    torch.testing.assert_close(v_pad, v_short, atol=1e-5, rtol=1e-4)
    assert (unmasked - v_short).abs().max() > 1e-4  # without the mask, padding leaks in


def test_loss_mask_ignores_padded_frames() -> None:
    model = make_model(SMALL)
    B, T, pad = 2, 12, 5
    full = inputs(SMALL, B, T + pad, seed=2)
    x1 = full.pop("x")
    t = full.pop("t")
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(B, T + pad)
    mask[:, T:] = 0
    loss_pad = flow_loss(model, x1, full, mask, cond_dropout=0.0, t=t, x0=x0)
    garbage = {k: v.clone() for k, v in full.items()}
    for v in garbage.values():
        v[:, T:] = (v[:, T:] + 7) if v.dtype.is_floating_point else 3
    x1g = x1.clone()
    x1g[:, T:] = 100.0
    loss_garbage = flow_loss(model, x1g, garbage, mask, cond_dropout=0.0, t=t, x0=x0)
    short = {k: v[:, :T] for k, v in full.items()}
    loss_short = flow_loss(model, x1[:, :T], short, None, cond_dropout=0.0, t=t, x0=x0[:, :T])
    torch.testing.assert_close(loss_pad, loss_short, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss_garbage, loss_short, atol=1e-6, rtol=1e-5)
    assert abs(flow_loss(model, x1g, garbage, None, cond_dropout=0.0, t=t, x0=x0) - loss_short) > 1.0


def test_drop_conditions_zeroes_whole_samples() -> None:
    d = inputs(SMALL_SPK, 400, 3)
    d.pop("x"), d.pop("t")
    assert all(torch.equal(a, b) for a, b in zip(drop_conditions(d, 0.0).values(), d.values(), strict=True))
    assert all(torch.count_nonzero(v) == 0 for v in drop_conditions(d, 1.0).values())
    out = drop_conditions(d, 0.3, torch.Generator().manual_seed(0))
    dropped = []
    for i in range(400):
        zero = [torch.count_nonzero(out[k][i]) == 0 for k in d]
        kept = [torch.equal(out[k][i], d[k][i]) for k in d]
        assert all(zero) or all(kept), "conditions of one sample must drop together"
        dropped.append(all(zero))
    assert 0.22 < np.mean(dropped) < 0.38


def test_step_flops_matches_torch_flop_counter() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    for cfg in (SMALL, SMALL_SPK):
        model = make_model(cfg)
        counter = FlopCounterMode(display=False)
        # The math backend decomposes attention into matmuls the counter sees.
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model(**inputs(cfg, 1, 33))
        assert step_flops(cfg, 33) == counter.get_total_flops()


def test_overfits_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = VSSFlowDiT(SMALL).train()
    B, T = 4, 24
    d = inputs(SMALL, B, T, seed=3)
    x1, _ = d.pop("x"), d.pop("t")
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    losses = []
    for _ in range(80):
        loss = flow_loss(model, x1, d, cond_dropout=0.0, t=t, x0=x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    assert torch.count_nonzero(model.phoneme_emb.weight[0]) == 0  # id 0 stays "no speech"


def test_real_tiny_config_runs() -> None:
    cfg = tiny_config()
    model = make_model(cfg)
    assert 5_000_000 < count_parameters(model) < 8_000_000
    with torch.no_grad():
        v = model(**inputs(cfg, 2, cfg.window_frames))
    assert v.shape == (2, cfg.window_frames, cfg.latent_channels) and torch.isfinite(v).all()


def test_checkpoint_round_trip(tmp_path) -> None:
    model = make_model(SMALL_SPK)
    codec = {"codec.mean": np.arange(6, dtype=np.float32), "codec.components": np.eye(3, dtype=np.float32),
             "codec.scale": torch.tensor([2.5])}
    path = save_checkpoint(tmp_path / "ckpt" / "m.safetensors", model, codec, {"step": "42"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors", "m.safetensors.json"]
    side = json.loads((tmp_path / "ckpt" / "m.safetensors.json").read_text())
    assert ModelConfig.from_dict(side["config"]) == SMALL_SPK

    ck = load_checkpoint(path)
    assert ck.config == SMALL_SPK and ck.metadata["step"] == "42" and ck.metadata["format"] == "vssflow-ckpt-1"
    assert set(ck.extra) == set(codec)
    np.testing.assert_array_equal(ck.extra["codec.components"].numpy(), codec["codec.components"])
    d = inputs(SMALL_SPK, 2, 9)
    with torch.no_grad():
        assert torch.equal(model(**d), ck.model(**d))


def test_checkpoint_errors_are_model_errors(tmp_path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelError, match="format"):
        load_checkpoint(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError):
        load_checkpoint(tmp_path / "junk.safetensors")


@pytest.mark.slow
def test_paper_config_forward() -> None:
    cfg = paper_config()
    torch.manual_seed(0)
    model = VSSFlowDiT(cfg).eval()
    n = count_parameters(model)
    assert 250e6 < n < 400e6, n
    with torch.no_grad():
        v = model(**inputs(cfg, 1, cfg.window_frames))
    assert v.shape == (1, 250, 128) and torch.isfinite(v).all()
