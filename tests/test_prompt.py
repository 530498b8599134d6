"""Foley text prompts: the tokenizer, the prompt condition in the DiT (torch and ONNX), negative prompts in the
guidance, training windows, and the CLI's handling of models with and without prompts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from small_model import SMALL

from vssflow_cli.config import ModelConfig, condition_shapes, per_window
from vssflow_cli.errors import UsageError
from vssflow_cli.model.dit import VSSFlowDiT
from vssflow_cli.model.flow import drop_conditions
from vssflow_cli.pipeline import JobOptions, prompt_conditions
from vssflow_cli.prompt import PAD, UNK, category_text, prompt_ids, unknown_words, vocabulary, words

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = vocabulary(["footsteps gravel", "footsteps/wood", "a door creaking", "glass break", "dog barking"])
PROMPTED = dataclasses.replace(SMALL, prompt_words=VOCAB, prompt_tokens=4)


def test_words_fold_case_plurals_and_stop_words() -> None:
    assert words("Footsteps on GRAVEL") == ["footstep", "gravel"]
    assert words("the sound of a dog_barking") == ["dog", "barking"]
    assert words("glass / breaks!") == ["glass", "break"]
    assert words("") == []


def test_category_text_prefers_the_caption() -> None:
    assert category_text("footsteps/wood", "") == "footsteps wood"
    assert category_text("animals/cow", "A cow mooing.") == "A cow mooing."
    assert category_text("battle/sword-clash") == "battle sword clash"


def test_prompt_ids_map_words_and_pad() -> None:
    ids = prompt_ids("footsteps on gravel and wind", VOCAB, 4)
    assert ids.dtype == np.int64 and ids.shape == (4,)
    assert ids.tolist() == [VOCAB.index("footstep") + 2, VOCAB.index("gravel") + 2, PAD, PAD]  # "wind" is unknown
    assert UNK not in prompt_ids("wind rain dog", VOCAB, 4)
    assert prompt_ids("", VOCAB, 4).tolist() == [0, 0, 0, 0]
    assert len(prompt_ids("dog " * 10, VOCAB, 4)) == 4  # words past the length are dropped
    assert unknown_words("wind and rain, more wind", VOCAB) == ["wind", "rain", "more"]


def test_config_carries_the_vocabulary_through_json() -> None:
    back = ModelConfig.from_json(PROMPTED.to_json())
    assert back == PROMPTED and isinstance(back.prompt_words, tuple)
    shapes = condition_shapes(PROMPTED, 2, 10)
    assert shapes["prompt"] == (2, 4) and "prompt" not in condition_shapes(SMALL, 2, 10)
    assert per_window(PROMPTED) == {"prompt"}


def _feed(cfg: ModelConfig, B: int = 2, T: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    d = {
        "x": rng.standard_normal((B, T, cfg.latent_channels), dtype=np.float32),
        "t": rng.random(B, dtype=np.float32),
        "phonemes": np.zeros((B, T), np.int64),
        "lip": np.zeros((B, T, cfg.lip_dim), np.float32),
        "sync": rng.standard_normal((B, T, cfg.sync_dim), dtype=np.float32),
        "video": rng.standard_normal((B, T, cfg.video_dim), dtype=np.float32),
    }
    return {k: torch.from_numpy(v) for k, v in d.items()}


def _model(cfg: ModelConfig) -> VSSFlowDiT:
    torch.manual_seed(0)
    m = VSSFlowDiT(cfg).eval()
    torch.nn.init.normal_(m.out_proj.weight, std=0.05)
    return m


def test_no_prompt_is_exactly_the_model_without_the_prompt_input() -> None:
    m = _model(PROMPTED)
    plain = VSSFlowDiT(SMALL).eval()
    missing, unexpected = plain.load_state_dict(m.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == ["prompt_emb.weight", "prompt_pos"]
    d = _feed(PROMPTED)
    none = torch.zeros(2, 4, dtype=torch.int64)
    with torch.no_grad():
        # equal up to the rounding of the masked attention kernel
        torch.testing.assert_close(m(**d, prompt=none), plain(**d), rtol=1e-5, atol=1e-6)
        words_a = torch.tensor([[2, 3, 0, 0], [4, 0, 0, 0]])
        words_b = torch.tensor([[2, 5, 0, 0], [4, 0, 0, 0]])
        va, vb = m(**d, prompt=words_a), m(**d, prompt=words_b)
    assert (va[0] - vb[0]).abs().max() > 1e-4  # the words matter ...
    torch.testing.assert_close(va[1], vb[1], rtol=0, atol=0)  # ... per sample
    assert (va[0] - plain(**d)[0]).abs().max() > 1e-4


def test_prompt_is_required_by_a_prompted_model() -> None:
    with pytest.raises(ValueError, match="prompt"):
        _model(PROMPTED)(**_feed(PROMPTED))


def test_dropout_spares_the_prompt_in_half_of_the_dropped_samples() -> None:
    B = 2000
    conds = {"video": torch.ones(B, 3, 2), "prompt": torch.full((B, 4), 3, dtype=torch.int64)}
    out = drop_conditions(conds, 0.5, torch.Generator().manual_seed(0))
    video_dropped = out["video"].flatten(1).eq(0).all(1)
    prompt_dropped = out["prompt"].eq(0).all(1)
    assert not (prompt_dropped & ~video_dropped).any()  # the prompt only goes with everything else
    assert 0.45 < video_dropped.float().mean() < 0.55
    assert 0.2 < prompt_dropped.float().mean() < 0.3  # half of the dropped ones keep their prompt


@pytest.fixture(scope="module")
def prompted_synth(tmp_path_factory):
    from vssflow_cli.runtime import Synthesizer
    from vssflow_cli.train.untrained import random_bundle

    root = random_bundle(tmp_path_factory.mktemp("prompted") / "prompted", PROMPTED, seed=1)
    return Synthesizer(root, device="cpu", threads=1, precision="fp32")


def test_onnx_graph_takes_the_prompt_and_matches_torch(prompted_synth) -> None:
    from vssflow_cli.model.checkpoint import load_checkpoint

    manifest = json.loads((prompted_synth.manifest.root / "manifest.json").read_text())
    assert manifest["config"]["prompt_words"] == list(VOCAB)
    model = load_checkpoint(prompted_synth.manifest.path("checkpoint")).model.eval()
    d = _feed(PROMPTED, T=30)
    prompt = torch.tensor([[2, 3, 0, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        ref = model(**d, prompt=prompt).numpy()
    conds = {k: v.numpy() for k, v in d.items() if k not in ("x", "t")} | {"prompt": prompt.numpy()}
    got = prompted_synth.velocity(d["x"].numpy(), d["t"].numpy(), prompted_synth.check_conditions(conds, 30))
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-3)


def test_negative_prompt_is_the_unconditional_branch(prompted_synth) -> None:
    T = 20
    rng = np.random.default_rng(0)
    conds = {"video": rng.standard_normal((1, T, PROMPTED.video_dim), dtype=np.float32),
             "prompt": prompt_ids("dog barking", VOCAB, 4)[None]}  # fmt: skip
    neg = {"prompt": prompt_ids("glass break", VOCAB, 4)[None]}
    plain = prompted_synth.sample(conds, T, steps=2, cfg=3.0, solver="euler", seed=0)
    negative = prompted_synth.sample(conds, T, steps=2, cfg=3.0, solver="euler", seed=0, uncond=neg)
    again = prompted_synth.sample(conds, T, steps=2, cfg=3.0, solver="euler", seed=0, uncond=neg)
    assert np.abs(plain - negative).max() > 1e-4
    np.testing.assert_array_equal(negative, again)
    with pytest.raises(Exception, match="prompt ids must lie"):
        prompted_synth.sample(conds | {"prompt": np.full((1, 4), 99, np.int64)}, T, steps=1)


def test_prompt_cfg_weights_the_prompt_alone(prompted_synth) -> None:
    T = 20
    rng = np.random.default_rng(1)
    video = {"video": rng.standard_normal((1, T, PROMPTED.video_dim), dtype=np.float32)}
    conds = video | {"prompt": prompt_ids("dog barking", VOCAB, 4)[None]}
    kw = {"steps": 2, "cfg": 3.0, "solver": "euler", "seed": 0}
    plain = prompted_synth.sample(conds, T, prompt_cfg=3.0, **kw)  # same weight as cfg: plain guidance
    default = prompted_synth.manifest.sampler.prompt_cfg or 3.0  # the bundle's own weight when none is passed
    np.testing.assert_array_equal(prompted_synth.sample(conds, T, **kw),
                                  prompted_synth.sample(conds, T, prompt_cfg=default, **kw))  # fmt: skip
    strong = prompted_synth.sample(conds, T, prompt_cfg=8.0, **kw)
    assert np.abs(strong - plain).max() > 1e-4
    # with no prompt there is nothing to weight: the option changes nothing
    np.testing.assert_array_equal(prompted_synth.sample(video, T, prompt_cfg=8.0, **kw),
                                  prompted_synth.sample(video, T, **kw))  # fmt: skip
    with pytest.raises(UsageError, match="--prompt-cfg must be between"):
        JobOptions(prompt="rain", prompt_cfg=-1.0)
    with pytest.raises(UsageError, match="--prompt-cfg weights the --prompt"):
        JobOptions(prompt_cfg=6.0)


def test_prompt_conditions_name_unknown_words_and_refuse_models_without_prompts() -> None:
    got = prompt_conditions(PROMPTED, JobOptions(prompt="footsteps on wet gravel", negative_prompt="dog"), "m")
    assert got["_fixed"]["prompt"].tolist() == prompt_ids("footsteps on wet gravel", VOCAB, 4).tolist()
    assert got["_uncond"]["prompt"].tolist() == prompt_ids("dog", VOCAB, 4).tolist()
    assert len(got["_warnings"]) == 1 and "'wet'" in got["_warnings"][0]
    nothing = prompt_conditions(PROMPTED, JobOptions(prompt="thunder"), "m")
    assert "_fixed" not in nothing and "no word the model knows" in nothing["_warnings"][-1]
    assert prompt_conditions(SMALL, JobOptions(), "m") == {}
    with pytest.raises(UsageError, match="takes no text prompt"):
        prompt_conditions(SMALL, JobOptions(prompt="rain"), "m")


def test_training_windows_carry_the_clip_prompt() -> None:
    from vssflow_cli.audio import LatentCodec
    from vssflow_cli.train.dataset import PROMPT_DROP, PROMPT_ONLY, Clip, WindowSampler, clip_prompt

    cfg = dataclasses.replace(PROMPTED, latent_channels=8, window_frames=40, lip_dim=8, video_dim=24)
    spl, n = cfg.audio.samples_per_latent, 20
    rng = np.random.default_rng(0)

    def clip(kind: str, prompt: str) -> Clip:
        return Clip(f"{kind}-{prompt}", kind, rng.normal(0, 0.1, n * spl).astype(np.float32),
                    np.ones((n, cfg.video_dim), np.float32), np.ones((n, cfg.sync_dim), np.float32),
                    np.zeros((n, cfg.lip_dim), np.float32),
                    np.full(n, 3 if kind == "speech" else 0, np.int64), prompt=prompt)  # fmt: skip

    clips = [clip("sound", "dog barking"), clip("speech", "")]
    mels = [np.random.default_rng(1).normal(size=(200, cfg.audio.n_mels)).astype(np.float32)]
    codec = LatentCodec.fit(mels, cfg.latent_channels, cfg.audio.mel_per_latent)
    sound = WindowSampler(clips, cfg, codec, mode_probs={"sound": 1.0})
    items = [sound(np.random.default_rng(i)) for i in range(300)]
    want = prompt_ids("dog barking", VOCAB, 4)
    kept = [it for it in items if it["prompt"].any()]
    assert all(np.array_equal(it["prompt"], want) for it in kept)
    assert abs(1 - len(kept) / len(items) - PROMPT_DROP) < 0.08
    hidden = sum(not it["video"].any() for it in kept) / len(kept)
    assert abs(hidden - PROMPT_ONLY) < 0.1  # prompt-only windows
    assert all(it["video"].any() for it in items if not it["prompt"].any())
    speech = WindowSampler(clips, cfg, codec, mode_probs={"speech": 1.0})
    assert not any(speech(np.random.default_rng(i))["prompt"].any() for i in range(20))
    assert sound.batch(np.random.default_rng(0), 3)["prompt"].shape == (3, 4)
    assert clip_prompt({"kind": "sound", "category": "silence/still", "caption": "a still picture"}) == ""
    assert clip_prompt({"kind": "sound", "category": "door/creak", "caption": ""}) == "door creak"


def test_cli_refuses_a_prompt_for_a_model_without_prompts(cli, tmp_path: Path, clip_short: Path) -> None:
    r = cli("foley", clip_short, "--prompt", "rain", "-o", tmp_path / "out.mp4")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "takes no text prompt" in r.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_cli_prompt_runs_and_names_unknown_words(cli, tmp_path: Path, clip_short: Path) -> None:
    from conftest import TEST_CONFIG, json_lines

    from vssflow_cli.train.untrained import random_bundle

    cfg = dataclasses.replace(TEST_CONFIG, prompt_words=VOCAB)
    bundle = random_bundle(tmp_path / "bundle", cfg, seed=0, include_checkpoint=False)
    out = tmp_path / "out.wav"
    r = cli("foley", clip_short, "--model", bundle, "--prompt", "dog barking in thunder",
            "--negative-prompt", "glass", "--steps", "1", "-o", out, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    (res,) = json_lines(r.stdout)
    warnings = res["warnings"]
    assert any("'thunder'" in w for w in warnings) and not any("'dog'" in w for w in warnings)
    assert out.exists()
