"""Model bundles: manifest round trip, sha256 verification, external data, model resolution."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vssflow_cli import bundle, models
from vssflow_cli.bundle import (
    FORMAT,
    SamplerDefaults,
    file_sha256,
    load_manifest,
    write_bundle,
)
from vssflow_cli.config import ModelConfig, feature_ids
from vssflow_cli.errors import ModelError
from vssflow_cli.models import resolve_model

CFG = ModelConfig(name="t", latent_channels=4, width=16, depth=1, heads=2, ffn_hidden=32, cross_dim=8,
                  video_dim=3, lip_dim=2, sync_dim=2, phoneme_vocab=10, phoneme_dim=4)


def matmul_graph(path: Path, n_in: int, n_out: int, in_name: str, out_name: str, seed: int = 0,
                 external: bool = False) -> Path:
    """A one-MatMul ONNX graph (B, T, n_in) -> (B, T, n_out) with random weights."""
    w = np.random.default_rng(seed).standard_normal((n_in, n_out)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", [in_name, "w"], [out_name])], "g",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["B", "T", n_in])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["B", "T", n_out])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data",
                  size_threshold=0, all_tensors_to_one_file=True)
    else:
        onnx.save(model, str(path))
    return path


def make_simple_bundle(root: Path, name: str = "b", external: bool = False) -> Path:
    src = root / f"{name}-src"
    src.mkdir(parents=True)
    dit = matmul_graph(src / "velocity.onnx", 4, 4, "x", "v", external=external)
    dec = matmul_graph(src / "dec.onnx", 4, 256, "latent", "logmel", seed=1)
    ckpt = src / "weights.safetensors"
    ckpt.write_bytes(b"not really safetensors, only hashed here")
    return write_bundle(
        root / name, config=CFG, files={"dit": dit, "decoder": dec, "checkpoint": ckpt},
        phoneme_vocab=["<none>", "<unk>", " ", "a"], sampler=SamplerDefaults("euler", 8, 2.0),
        licence="MIT", name=name, created_from="ab" * 32, training={"steps": 3},
        extra_meta={"note": "test"},
    )


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    out = make_simple_bundle(tmp_path)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["format"] == FORMAT
    roles = {e["role"]: (path, e) for path, e in raw["files"].items()}
    assert set(roles) == {"dit", "decoder", "checkpoint"}
    assert roles["dit"][0] == "dit.onnx" and roles["checkpoint"][1]["required"] is False
    for path, e in raw["files"].items():  # keyed by file name: checkable from the manifest alone
        assert file_sha256(out / path) == e["sha256"]

    m = load_manifest(out)
    assert m.config == CFG
    assert m.name == "b" and m.licence == "MIT" and m.created_from == "ab" * 32
    assert m.sampler == SamplerDefaults("euler", 8, 2.0)
    assert m.phoneme_vocab == ("<none>", "<unk>", " ", "a")
    assert m.features == feature_ids(CFG)
    assert m.training == {"steps": 3} and m.extra == {"note": "test"}
    for role, src in [("dit", tmp_path / "b-src/velocity.onnx"), ("decoder", tmp_path / "b-src/dec.onnx")]:
        assert m.path(role).read_bytes() == src.read_bytes()
        assert m.files[role].sha256 == file_sha256(src)
        assert m.files[role].bytes == src.stat().st_size
    # the manifest file itself works as the path, and writes round-trip exactly
    assert load_manifest(out / "manifest.json").to_dict() == m.to_dict()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_tampered_file_is_a_model_error_naming_file_and_fix(tmp_path: Path) -> None:
    out = make_simple_bundle(tmp_path, name="tiny-x")
    load_manifest(out)  # fills the hash cache
    data = bytearray((out / "dit.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, so only the hash (re-computed: mtime changed) can catch it
    (out / "dit.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        load_manifest(out)
    msg = str(e.value)
    assert "sha256 mismatch for dit.onnx" in msg and "vssflow models pull tiny-x" in msg
    assert "\n" not in msg and e.value.exit_code == 4
    load_manifest(out, verify=False)  # explicitly unverified loading still works


def test_missing_required_file_fails_but_optional_may_be_absent(tmp_path: Path) -> None:
    out = make_simple_bundle(tmp_path)
    (out / "checkpoint.safetensors").unlink()
    m = load_manifest(out)
    assert not m.has("checkpoint")
    with pytest.raises(ModelError, match="no 'checkpoint' file"):
        m.path("checkpoint")
    (out / "decoder.onnx").unlink()
    with pytest.raises(ModelError, match="missing decoder.onnx"):
        load_manifest(out)


def test_bad_manifests(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no manifest.json"):
        load_manifest(tmp_path)
    out = make_simple_bundle(tmp_path)
    raw = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**raw, "format": "other-9"}))
    with pytest.raises(ModelError, match="format 'other-9'"):
        load_manifest(out)
    files = dict(raw["files"])
    files["../escape.onnx"] = files.pop("dit.onnx")
    (out / "manifest.json").write_text(json.dumps({**raw, "files": files}))
    with pytest.raises(ModelError, match="leaves the bundle"):
        load_manifest(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_manifest(out)


def test_hash_cache_hashes_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = make_simple_bundle(tmp_path)
    past = os.stat(out / "dit.onnx").st_mtime - 60
    for f in out.iterdir():  # files modified just now are never cached (their mtime may not move on a rewrite)
        os.utime(f, (past, past))
    bundle._HASH_CACHE.clear()
    calls = []
    real = bundle.hashlib.sha256
    monkeypatch.setattr(bundle.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        load_manifest(out)
    assert len(calls) == 3  # dit, decoder, checkpoint: once each over three loads


def test_external_data_is_copied_and_hashed(tmp_path: Path) -> None:
    out = make_simple_bundle(tmp_path, external=True)
    m = load_manifest(out)
    assert m.files["dit.data"].path == "velocity.onnx.data"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(m.path("dit")), providers=["CPUExecutionProvider"])
    x = np.ones((1, 2, 4), np.float32)
    (v,) = sess.run(["v"], {"x": x})
    assert v.shape == (1, 2, 4)
    (out / "velocity.onnx.data").write_bytes(b"\0" * m.files["dit.data"].bytes)
    with pytest.raises(ModelError, match="velocity.onnx.data"):
        load_manifest(out)


def test_resolve_model_paths_env_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "weights"
    make_simple_bundle(weights, name="vssflow-tiny")
    monkeypatch.setenv("VSSFLOW_WEIGHTS", str(weights))  # how an installed wheel finds the default
    assert resolve_model(None) == (weights / "vssflow-tiny").resolve()
    assert resolve_model("vssflow-tiny") == (weights / "vssflow-tiny").resolve()
    monkeypatch.setenv("VSSFLOW_WEIGHTS", str(weights / "vssflow-tiny"))  # or the bundle itself
    assert resolve_model(None) == (weights / "vssflow-tiny").resolve()

    local = make_simple_bundle(tmp_path, name="mine")
    assert resolve_model(str(local)) == local.resolve()
    assert resolve_model(local / "manifest.json") == local.resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("./mine") == local.resolve()

    with pytest.raises(ModelError, match="no manifest.json"):
        resolve_model(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelError, match="pin"):
        resolve_model("someone/some-model")
    with pytest.raises(ModelError, match="not a known name"):
        resolve_model("no-such-model")
    with pytest.raises(ModelError, match="not published yet"):
        resolve_model("vssflow-paper")


def test_default_model_missing_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSSFLOW_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(models, "default_model_candidates", lambda: [tmp_path / "vssflow-tiny"])
    with pytest.raises(ModelError, match="VSSFLOW_WEIGHTS"):
        resolve_model(None)


def test_write_bundle_requires_dit_and_decoder(tmp_path: Path) -> None:
    dit = matmul_graph(tmp_path / "d.onnx", 4, 4, "x", "v")
    with pytest.raises(ValueError, match="decoder"):
        write_bundle(tmp_path / "o", config=CFG, files={"dit": dit}, phoneme_vocab=[], licence="MIT")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_rewrite_in_place_keeps_bundle_valid(tmp_path: Path) -> None:
    out = make_simple_bundle(tmp_path)
    m = load_manifest(out)
    files = {role: m.path(role) for role in ("dit", "decoder", "checkpoint")}  # sources inside out/
    write_bundle(out, config=CFG, files=files, phoneme_vocab=list(m.phoneme_vocab), licence="MIT")
    assert load_manifest(out).files["dit"].sha256 == m.files["dit"].sha256
    assert os.listdir(out) and sorted(os.listdir(out)) == ["checkpoint.safetensors", "decoder.onnx",
                                                            "dit.onnx", "manifest.json"]


# --------------------------------------------------------------------------- manifest values (issue 13 item 9)

# The manifest is not hashed (its files are), so an edited value passes verify_files and must be caught by sense.
BAD_FIELDS = [
    ("config.latent_channels", 65),  # the graphs take 16 (conftest's TEST_CONFIG)
    ("config.lip_dim", 3),  # the DiT's lip input is 8 wide
    ("config.window_frames", -5),
    ("config.window_frames", 10**9),
    ("config.audio.sample_rate", 0),
    ("config.audio.hop", 0),
    ("sampler.steps", 10**9),
    ("sampler.steps", 0),
    ("sampler.steps", 16.5),
    ("sampler.solver", "bogus"),
]


def tampered_copy(bundle_dir: Path, dest: Path, field: str, value: object) -> Path:
    """A copy of a real bundle with one manifest value changed (the graphs and their sha256 untouched)."""
    import shutil

    shutil.copytree(bundle_dir, dest)
    raw = json.loads((dest / "manifest.json").read_text())
    *parents, last = field.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    (dest / "manifest.json").write_text(json.dumps(raw))
    return dest


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f"{f}={v}" for f, v in BAD_FIELDS])
def test_insane_manifest_values_are_a_model_error_naming_bundle_and_field(field, value, test_bundle, cli, clip_short,
                                                                           tmp_path) -> None:
    bad = tampered_copy(test_bundle, tmp_path / "bad-bundle", field, value)
    with pytest.raises(ModelError) as e:
        load_manifest(bad)
    msg = str(e.value)
    assert f"model bundle {bad.resolve()}: manifest field {field}={json.dumps(value)}" in msg and "\n" not in msg
    assert e.value.exit_code == 4
    # the real CLI: exit 4 (not 70, nor 2 as if the user had typed it), one line, nothing written
    r = cli("foley", clip_short, "-o", tmp_path / "out.mp4", "--model", bad)
    assert r.returncode == 4, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"manifest field {field}=" in lines[0] and str(bad.resolve()) in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out.mp4").exists()


def test_sane_bundle_passes_and_typed_steps_stay_usage_errors(test_bundle, cli, clip_short, tmp_path) -> None:
    m = load_manifest(test_bundle)
    bundle.check_graphs(m)
    r = cli("foley", clip_short, "-o", tmp_path / "out.mp4", "--steps", "0")
    assert r.returncode == 2, r.stderr


def test_onnx_inputs_match_the_onnx_package(test_bundle: Path) -> None:
    for path in sorted(test_bundle.glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)
        want = {i.name: tuple(d.dim_value or None for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
        assert bundle.onnx_inputs(path) == want, path.name
