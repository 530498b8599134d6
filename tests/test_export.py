"""ONNX export of the DiT: contract of the graph and parity of ONNX Runtime with torch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from small_model import SMALL_SPK

from vssflow_cli.config import tiny_config
from vssflow_cli.export import dummy_inputs, export_dit_onnx, torch_vs_onnx_max_rel_err
from vssflow_cli.model.dit import VSSFlowDiT
from vssflow_cli.model.flow import torch_velocity
from vssflow_cli.sampler import sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_like(cfg) -> VSSFlowDiT:
    torch.manual_seed(0)
    model = VSSFlowDiT(cfg).eval()
    torch.nn.init.normal_(model.out_proj.weight, std=0.05)  # zero-init output would make parity vacuous
    return model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    model = trained_like(SMALL_SPK)
    path = export_dit_onnx(model, tmp_path_factory.mktemp("onnx") / "dit.onnx", export_frames=32)
    return model, path


def session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def weight_bytes(path) -> int:
    return sum(len(init.raw_data) for init in onnx.load(str(path)).graph.initializer)


def test_graph_contract(small) -> None:
    _, path = small
    graph = onnx.load(str(path)).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert list(inputs) == ["x", "t", "phonemes", "lip", "sync", "video", "speaker"]
    assert [o.name for o in graph.output] == ["v"]
    assert inputs["phonemes"].elem_type == onnx.TensorProto.INT64
    assert inputs["x"].elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in inputs["x"].shape.dim]
    assert dims == ["batch", "frames", 16]
    assert [d.dim_param for d in graph.output[0].type.tensor_type.shape.dim][:2] == ["batch", "frames"]


@pytest.mark.parametrize("T,batch", [(32, 2), (7, 1), (50, 3), (125, 1)])
def test_onnx_matches_torch(small, T: int, batch: int) -> None:
    model, path = small
    assert torch_vs_onnx_max_rel_err(model, path, T, batch, seed=T) <= 1e-4


def test_same_sampler_drives_torch_and_onnx(small) -> None:
    model, path = small
    sess = session(path)

    def ort_fn(x, t, conds):
        return sess.run(["v"], {"x": x.astype(np.float32), "t": t.astype(np.float32), **conds})[0]

    feed = dummy_inputs(model, T=24, batch=2, seed=4)
    conds = {k: v for k, v in feed.items() if k not in ("x", "t")}
    a = sample(ort_fn, conds, feed["x"].shape, solver="midpoint", steps=4, cfg=3.0, seed=1)
    b = sample(torch_velocity(model), conds, feed["x"].shape, solver="midpoint", steps=4, cfg=3.0, seed=1)
    assert a.nfe == b.nfe == 8
    np.testing.assert_allclose(a.x, b.x, atol=1e-4, rtol=1e-4)


def test_real_tiny_config_without_speaker_via_torchscript_exporter(tmp_path) -> None:
    model = trained_like(tiny_config())
    path = export_dit_onnx(model, tmp_path / "tiny.onnx", dynamo=False)  # the fallback exporter
    assert [i.name for i in session(path).get_inputs()] == ["x", "t", "phonemes", "lip", "sync", "video"]
    assert torch_vs_onnx_max_rel_err(model, path, T=tiny_config().window_frames, batch=2) <= 1e-4
    assert model.training is False and not list(tmp_path.glob("*.tmp"))


def test_fp16_export_keeps_float32_io(small, tmp_path) -> None:
    model, fp32_path = small
    path = export_dit_onnx(model, tmp_path / "dit16.onnx", fp16=True)
    sess = session(path)
    assert all(i.type == "tensor(float)" for i in sess.get_inputs() if i.name != "phonemes")
    assert sess.get_outputs()[0].type == "tensor(float)"
    assert weight_bytes(path) < 0.55 * weight_bytes(fp32_path)
    assert torch_vs_onnx_max_rel_err(model, path, T=40, batch=2) <= 5e-3
    assert next(model.parameters()).dtype == torch.float32  # the source model is untouched
