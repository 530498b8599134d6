"""ONNX Runtime synthesizer on a small real bundle (random DiT exported by the model code + codec)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vssflow_cli import sampler
from vssflow_cli.config import ModelConfig
from vssflow_cli.errors import ModelError, UsageError
from vssflow_cli.runtime import Synthesizer, get_session, physical_cores, providers_for
from vssflow_cli.train.untrained import random_bundle

CFG = ModelConfig(name="small", latent_channels=16, window_frames=24, width=64, depth=2, heads=2,
                  ffn_hidden=128, cross_dim=32, video_dim=12, lip_dim=4, sync_dim=6, phoneme_vocab=40,
                  phoneme_dim=8, speaker_dim=5)
T = 24


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> Path:
    return random_bundle(tmp_path_factory.mktemp("bundle") / "small", CFG, seed=3)


@pytest.fixture(scope="module")
def synth(small_bundle: Path) -> Synthesizer:
    # the float32 graph: these tests compare it with torch at 1e-4 (int8 has its own tests below)
    return Synthesizer(small_bundle, device="cpu", threads=1, precision="fp32")


def conditions(batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "phonemes": rng.integers(0, CFG.phoneme_vocab, (batch, T), dtype=np.int64),
        "lip": rng.standard_normal((batch, T, CFG.lip_dim), dtype=np.float32),
        "sync": rng.standard_normal((batch, T, CFG.sync_dim), dtype=np.float32),
        "video": rng.standard_normal((batch, T, CFG.video_dim), dtype=np.float32),
        "speaker": rng.standard_normal((batch, CFG.speaker_dim), dtype=np.float32),
    }


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def test_ort_velocity_matches_torch(synth: Synthesizer) -> None:
    import torch

    from vssflow_cli.model.checkpoint import load_checkpoint
    from vssflow_cli.model.flow import torch_velocity

    model = load_checkpoint(synth.manifest.path("checkpoint")).model.eval()
    conds = conditions(batch=3)
    x = np.random.default_rng(1).standard_normal((3, T, CFG.latent_channels), dtype=np.float32)
    t = np.array([0.0, 0.4, 1.0], np.float32)
    got = synth.velocity(x, t, synth.check_conditions(conds, T))
    ref = torch_velocity(model)(x, t, conds)
    assert got.shape == (3, T, CFG.latent_channels) and got.dtype == np.float32
    assert np.abs(ref).max() > 1e-3  # the random output layer makes v non-trivial
    assert rel_err(got, ref) < 1e-4
    # a different length than the one traced at export (dynamic T)
    x7 = x[:, :7]
    c7 = {k: (v[:, :7] if k != "speaker" else v) for k, v in conds.items()}
    assert rel_err(synth.velocity(x7, t, c7), torch_velocity(model)(x7, t, c7)) < 1e-4
    del torch


def test_sample_matches_torch_sampler_and_is_deterministic(synth: Synthesizer) -> None:
    import torch  # noqa: F401 - the torch reference

    from vssflow_cli.model.checkpoint import load_checkpoint
    from vssflow_cli.model.flow import torch_velocity

    conds = conditions(batch=2, seed=5)
    a = synth.sample(conds, T, steps=3, cfg=2.5, solver="midpoint", seed=11)
    assert a.shape == (2, T, CFG.latent_channels) and synth.last_nfe == 6
    b = synth.sample(conds, T, steps=3, cfg=2.5, solver="midpoint", seed=11)
    np.testing.assert_array_equal(a, b)
    c = synth.sample(conds, T, steps=3, cfg=2.5, solver="midpoint", seed=12)
    assert np.abs(a - c).max() > 0.1

    model = load_checkpoint(synth.manifest.path("checkpoint")).model.eval()
    ref = sampler.sample(torch_velocity(model), conds, a.shape, solver="midpoint", steps=3, cfg=2.5, seed=11).x
    assert rel_err(a, ref) < 1e-4


def test_bundle_sampler_defaults_are_used(synth: Synthesizer) -> None:
    d = synth.manifest.sampler
    assert (d.solver, d.steps, d.cfg) == ("midpoint", 16, 3.0)
    seen = []
    synth.sample(conditions(), T, progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (16, 16) and synth.last_nfe == 32


def test_absent_conditions_are_zeros(synth: Synthesizer) -> None:
    zeros = {k: np.zeros_like(v) for k, v in conditions().items()}
    a = synth.sample({}, T, steps=2, seed=1, batch=1)
    b = synth.sample(zeros, T, steps=2, seed=1)
    np.testing.assert_array_equal(a, b)


def test_condition_validation(synth: Synthesizer) -> None:
    bad = conditions()
    bad["lip"] = bad["lip"][..., :3]
    with pytest.raises(ModelError, match=r"'lip' has shape \(1, 24, 3\).*expects \(1, 24, 4\).*vssflow-lip-v1"):
        synth.sample(bad, T, steps=1)
    with pytest.raises(ModelError, match="unknown mouth"):
        synth.sample({"mouth": np.zeros((1, T))}, T, steps=1)
    ph = conditions()
    ph["phonemes"][0, 0] = CFG.phoneme_vocab
    with pytest.raises(ModelError, match=r"phoneme ids must lie in \[0, 40\)"):
        synth.sample(ph, T, steps=1)
    with pytest.raises(UsageError, match="unknown solver"):
        synth.sample(conditions(), T, steps=1, solver="heun3")
    with pytest.raises(ModelError, match="latent has shape"):
        synth.decode(np.zeros((1, T, 3), np.float32))


def test_decode_gives_16k_waveform(synth: Synthesizer) -> None:
    lat = synth.sample(conditions(batch=2), T, steps=2)
    wave = synth.decode(lat, vocoder_iters=4)
    assert wave.shape == (2, T * CFG.audio.samples_per_latent) and wave.dtype == np.float32
    assert np.isfinite(wave).all() and 0 < np.abs(wave).max() <= 1.0
    mel = synth.logmel(lat[0])  # one window without batch dim is accepted too
    assert mel.shape == (1, T * 4, CFG.audio.n_mels)


def test_io_binding_path_matches_plain_run(small_bundle: Path, synth: Synthesizer) -> None:
    bound = Synthesizer(small_bundle, device="cpu", threads=1, io_binding=True, precision="fp32")
    conds = conditions(batch=2)
    a = synth.sample(conds, T, steps=2, seed=4)
    b = bound.sample(conds, T, steps=2, seed=4)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not bound._bound  # device copies are dropped after each sampling run


def test_cuda_without_cuda_provider_is_a_model_error(small_bundle: Path) -> None:
    # This machine's onnxruntime has no CUDA provider: the real behaviour, not a mock.
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ModelError, match="CUDA requested but onnxruntime has no CUDA provider") as e:
        Synthesizer(small_bundle, device="cuda")
    assert "--device cpu" in str(e.value) and "\n" not in str(e.value)
    auto = Synthesizer(small_bundle, device="auto")
    assert auto.device_used == "cpu" and "CPU" in auto.device_note
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="unknown device 'gpu'"):
        providers_for("gpu")


def test_int8_graph_is_the_cpu_default_and_stays_close_to_fp32(small_bundle: Path, synth: Synthesizer) -> None:
    from vssflow_cli.bundle import load_manifest

    m = load_manifest(small_bundle)
    assert m.files["dit-int8"].required is False and m.files["dit-int8"].path == "dit-int8.onnx"
    assert 0 < m.extra["dit_int8"]["rel_err_vs_fp32"] < 0.1
    auto = Synthesizer(small_bundle, device="cpu", threads=1)
    assert auto.precision == "int8" and synth.precision == "fp32"
    import onnx

    def ops(role: str) -> set[str]:
        return {n.op_type for n in onnx.load(str(m.path(role))).graph.node}

    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops("dit-int8") and "MatMulInteger" not in ops("dit")
    conds = synth.check_conditions(conditions(batch=2), T)
    x = np.random.default_rng(5).standard_normal((2, T, CFG.latent_channels), dtype=np.float32)
    t = np.array([0.3, 0.8], np.float32)
    ref, got = synth.velocity(x, t, conds), auto.velocity(x, t, conds)
    err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert 1e-5 < err < 0.1  # quantized (not the same graph), but close
    # a whole sampling run stays close too: the solver does not amplify the quantization error
    a = synth.sample(conditions(batch=1), T, steps=4, seed=2)
    b = auto.sample(conditions(batch=1), T, steps=4, seed=2)
    assert float(np.linalg.norm(b - a) / np.linalg.norm(a)) < 0.1


def test_precision_choice_and_errors(tmp_path: Path, small_bundle: Path) -> None:
    from vssflow_cli.bundle import load_manifest, write_bundle

    m = load_manifest(small_bundle)
    lean = write_bundle(tmp_path / "lean", config=m.config, phoneme_vocab=list(m.phoneme_vocab),
                        files={"dit": m.path("dit"), "decoder": m.path("decoder")}, name="lean")
    assert Synthesizer(lean, device="cpu", threads=1).precision == "fp32"  # no int8 graph: float, silently
    with pytest.raises(ModelError, match="ships no int8 DiT .*--precision fp32") as e:
        Synthesizer(lean, device="cpu", precision="int8")
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        Synthesizer(small_bundle, device="cpu", precision="int4")


def test_auto_precision_keeps_the_float_graph_on_cuda(small_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CUDA device cannot exist here: only the provider list is faked, to check which graph "auto" picks for it.
    from vssflow_cli import runtime

    monkeypatch.setattr(runtime, "available_providers", lambda: [runtime.CUDA_EP, runtime.CPU_EP])
    picked: list[str] = []

    class Picked(Exception):
        pass

    def fake_session(path, *args, **kwargs):
        picked.append(Path(path).name)
        raise Picked  # stop before a CUDA session would be made

    monkeypatch.setattr(runtime, "get_session", fake_session)
    for precision in ("auto", "int8", "fp32"):
        with pytest.raises(Picked):
            Synthesizer(small_bundle, device="auto", precision=precision)
    assert picked == ["dit.onnx", "dit-int8.onnx", "dit.onnx"]


def test_sessions_are_cached(small_bundle: Path, synth: Synthesizer) -> None:
    again = Synthesizer(small_bundle, device="cpu", threads=1, precision="fp32")
    assert again._dit is synth._dit
    other = Synthesizer(small_bundle, device="cpu", threads=2, precision="fp32")
    assert other._dit is not synth._dit
    assert get_session(synth.manifest.path("dit"), ["CPUExecutionProvider"], 1) is synth._dit
    assert 1 <= physical_cores() <= (__import__("os").cpu_count() or 1)


def test_bundle_with_wrong_graph_inputs_is_rejected(tmp_path: Path, small_bundle: Path) -> None:
    from test_bundle import matmul_graph  # tests/ is on sys.path under pytest

    from vssflow_cli.bundle import load_manifest, write_bundle

    m = load_manifest(small_bundle)
    bad = write_bundle(tmp_path / "bad", config=CFG, phoneme_vocab=list(m.phoneme_vocab),
                       files={"dit": matmul_graph(tmp_path / "g.onnx", 16, 16, "x", "v"),
                              "decoder": m.path("decoder")})
    with pytest.raises(ModelError, match="dit.onnx inputs .* do not match its config"):
        Synthesizer(bad, device="cpu")


def test_inference_path_never_imports_torch(small_bundle: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from vssflow_cli.runtime import Synthesizer
        s = Synthesizer({str(small_bundle)!r}, device="cpu", threads=1)
        lat = s.sample({{}}, 8, steps=1, batch=1)
        s.decode(lat, vocoder_iters=1)
        bad = [m for m in ("torch", "lightning", "onnx") if m in sys.modules]
        assert not bad, bad
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _rewritten(tmp_path: Path, small_bundle: Path, **changes) -> Path:
    """A copy of the small bundle whose manifest differs by ``changes`` (same graphs)."""
    from vssflow_cli.bundle import load_manifest, write_bundle

    m = load_manifest(small_bundle)
    kw = {"phoneme_vocab": list(m.phoneme_vocab), "features": dict(m.features)} | changes
    return write_bundle(tmp_path / "changed", config=m.config, name="changed",
                        files={"dit": m.path("dit"), "decoder": m.path("decoder")}, **kw)


def test_bundle_with_another_phoneme_vocabulary_is_refused(tmp_path: Path, small_bundle: Path) -> None:
    from vssflow_cli.text import PHONEME_VOCAB

    vocab = list(PHONEME_VOCAB)
    vocab[5], vocab[6] = vocab[6], vocab[5]  # same size, so only a comparison can tell
    bad = _rewritten(tmp_path, small_bundle, phoneme_vocab=vocab)
    with pytest.raises(ModelError, match=r"changed: phoneme vocabulary differs .*first difference at id 5") as e:
        Synthesizer(bad, device="cpu", threads=1)
    assert e.value.exit_code == 4 and "\n" not in str(e.value)


def test_bundle_with_other_feature_extractors_is_refused(tmp_path: Path, small_bundle: Path) -> None:
    from vssflow_cli.bundle import load_manifest

    features = dict(load_manifest(small_bundle).features) | {"lip": "vssflow-lip-v0"}
    bad = _rewritten(tmp_path, small_bundle, features=features)
    with pytest.raises(ModelError, match=r"changed: feature extractors lip=vssflow-lip-v0 differ .*lip=vssflow-lip-v1"):
        Synthesizer(bad, device="cpu", threads=1)
    assert Synthesizer(_rewritten(tmp_path / "same", small_bundle), device="cpu", threads=1).config == CFG


def test_condition_contract_matches_graph_and_model(small_bundle: Path, synth: Synthesizer) -> None:
    import torch

    from vssflow_cli.config import condition_names, condition_shapes, random_inputs
    from vssflow_cli.model.checkpoint import load_checkpoint

    assert [i.name for i in synth._dit.get_inputs()] == ["x", "t", *condition_names(CFG)]
    assert condition_names(CFG)[-1] == "speaker" and "speaker" not in condition_names(ModelConfig())
    conds = random_inputs(CFG, 2, T, np.random.default_rng(0))
    assert {k: v.shape for k, v in conds.items()} == condition_shapes(CFG, 2, T)
    assert conds["phonemes"].dtype == np.int64 and conds["lip"].dtype == np.float32
    model = load_checkpoint(synth.manifest.path("checkpoint")).model.eval()
    assert model.in_proj.in_features == CFG.in_channels
    x = np.zeros((2, T, CFG.latent_channels), np.float32)
    with torch.inference_mode():  # the forward's keywords are the contract's names
        model(torch.from_numpy(x), torch.zeros(2), **{k: torch.from_numpy(v) for k, v in conds.items()})


def test_embedded_bundle_runs_without_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel leaves out the training checkpoint: inference and bench's torch row must not need it."""
    import shutil

    from vssflow_cli.bench import torch_step_fn
    from vssflow_cli.models import default_model_dir

    src = default_model_dir()
    dst = tmp_path / "vssflow-tiny"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    monkeypatch.setenv("VSSFLOW_WEIGHTS", str(tmp_path))
    synth = Synthesizer.from_spec(None, device="cpu", threads=1)  # verifies every file the manifest requires
    assert synth.manifest.root == dst.resolve() and not synth.manifest.has("checkpoint")
    fn, note = torch_step_fn(synth.manifest, 8)
    assert fn is None and "no checkpoint" in note
