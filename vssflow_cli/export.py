"""``vssflow export``: a training checkpoint -> ONNX graphs -> model bundle (needs torch and onnx).

:func:`export_bundle` is the whole command; :func:`export_dit_onnx` exports the DiT velocity network.

The graph's inputs are ``x`` (B, T, C) float32, ``t`` (B,) float32 and the model's conditions as
``vssflow_cli.config.CONDITIONS`` defines them (names, dtypes, shapes); the output is ``v``
(B, T, C) float32. Batch and T are dynamic.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript, opset 18) by default.
Both exporters work here and give the same outputs (max relative error vs torch ~1e-6) and the
same ONNX Runtime CPU speed; the dynamo graph is the cleaner one (tiny model after ORT's
optimizer: 506 nodes vs 635, 14 Shape ops vs 50, which matters for the CUDA EP where shape
arithmetic runs on the host), and the TorchScript exporter is deprecated since torch 2.9.
``dynamo=False`` remains as a fallback; it exports ~20x faster (0.6 s vs 12 s for the tiny model).

int8: :func:`quantize_dit_int8` derives ``dit-int8.onnx`` from the float32 graph with ONNX Runtime's dynamic
quantization (int8 weights per output channel, activations quantized per call); its MatMulInteger kernels use
AVX-512 VNNI / AVX2 on CPU, where it is about twice as fast as float32. The runtime picks it on CPU by default.

fp16: the network runs in float16 (weights and activations; the time embedding's sinusoids in
float32) while the graph's inputs and outputs stay float32, so callers never change. Meant for
CUDA: the file is half the size, and on CPU it is no faster than float32.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vssflow_cli.audio import LatentCodec
from vssflow_cli.bundle import DEFAULT_LICENCE, ENCODER_ROLE, INT8_ROLE, SamplerDefaults, file_sha256, write_bundle
from vssflow_cli.config import condition_names, conditions, per_window, random_inputs
from vssflow_cli.errors import ModelError
from vssflow_cli.model.checkpoint import load_checkpoint
from vssflow_cli.model.dit import VSSFlowDiT
from vssflow_cli.output import atomic_output
from vssflow_cli.text import PHONEME_VOCAB

DEFAULT_OPSET = 18


def input_names(model: VSSFlowDiT) -> list[str]:
    """Graph inputs in positional order: x, t, then the model's conditions."""
    return ["x", "t", *condition_names(model.config)]


class _Positional(nn.Module):
    """Positional signature (x, t, *conditions) for export; optional fp16 compute behind fp32 I/O."""

    def __init__(self, model: VSSFlowDiT, fp16: bool):
        super().__init__()
        self.model, self.fp16 = model, fp16
        self.names = condition_names(model.config)

    def forward(self, x: Tensor, t: Tensor, *conds: Tensor) -> Tensor:
        if self.fp16:
            # t stays float32: the time embedding computes its sinusoids in float32.
            x = x.half()
            conds = tuple(c.half() if c.is_floating_point() else c for c in conds)
        return self.model(x, t, **dict(zip(self.names, conds, strict=True))).float()


def dummy_inputs(model: VSSFlowDiT, T: int, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32/int64 inputs in the contract's shapes, keyed by graph input name."""
    c = model.config
    rng = np.random.default_rng(seed)
    feed = {
        "x": rng.standard_normal((batch, T, c.latent_channels), dtype=np.float32),
        "t": rng.random(batch, dtype=np.float32),
    }
    return feed | random_inputs(c, batch, T, rng)


def _per_frame(model: VSSFlowDiT) -> dict[str, bool]:
    """Graph input name -> whether its axis 1 is the (dynamic) frame axis."""
    fixed = per_window(model.config)  # one value per window: the speaker vector, the prompt's word ids
    return {"x": True, "t": False} | {c.name: c.name not in fixed for c in conditions(model.config)}


def export_dit_onnx(
    model: VSSFlowDiT,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    *,
    dynamo: bool = True,
    export_frames: int = 32,
) -> Path:
    """Export ``model`` to ``path`` (one .onnx file, weights inside) and check it with onnx.checker.

    The graph is traced at ``export_frames`` frames and batch 2; batch and T stay dynamic.
    ``dynamo=False`` selects the legacy TorchScript exporter (same outputs, faster to export).
    The model is left as it was (the fp16 export works on a float16 twin). Writes atomically.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    src = model
    if fp16:  # a float16 twin; meta init + assign avoids a float32 copy of a big model
        with torch.device("meta"):
            src = VSSFlowDiT(model.config)
        src.load_state_dict({k: v.detach().half() for k, v in model.state_dict().items()}, assign=True)
    wrapper = _Positional(src, fp16).eval()
    names = input_names(model)
    feed = dummy_inputs(model, export_frames, batch=2)
    args = tuple(torch.from_numpy(feed[n]) for n in names)

    was_training = model.training
    model.eval()
    try:
        with atomic_output(path) as tmp, torch.no_grad(), _quiet_exporter():
            if dynamo:
                _export_dynamo(wrapper, args, _per_frame(model), tmp, opset)
            else:
                _export_torchscript(wrapper, args, _per_frame(model), tmp, opset)
            onnx.checker.check_model(str(tmp), full_check=True)
    finally:
        model.train(was_training)
    return path


def _export_dynamo(
    wrapper: nn.Module, args: tuple[Tensor, ...], per_frame: dict[str, bool], out: Path, opset: int
) -> None:
    batch, frames = torch.export.Dim("batch", min=1), torch.export.Dim("frames", min=1)
    dims = [{0: batch, 1: frames} if f else {0: batch} for f in per_frame.values()]
    shapes = (dims[0], dims[1], tuple(dims[2:]))  # the structure of forward(x, t, *conds)
    program = torch.onnx.export(
        wrapper, args, None, input_names=list(per_frame), output_names=["v"], dynamic_shapes=shapes,
        opset_version=opset, dynamo=True, optimize=True, verbose=False,
    )
    program.save(str(out))


def _export_torchscript(
    wrapper: nn.Module, args: tuple[Tensor, ...], per_frame: dict[str, bool], out: Path, opset: int
) -> None:
    axes = {n: ({0: "batch", 1: "frames"} if f else {0: "batch"}) for n, f in per_frame.items()}
    axes["v"] = {0: "batch", 1: "frames"}
    torch.onnx.export(
        wrapper, args, str(out), input_names=list(per_frame), output_names=["v"], dynamic_axes=axes,
        opset_version=opset, dynamo=False, do_constant_folding=True,
    )


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporters' expected chatter (legacy-exporter deprecation, optional
    torchvision ops not registered, tracer notes) so library code prints nothing."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*axis name.*will not be used", category=UserWarning)
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def quantize_dit_int8(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write a dynamically quantized (int8 MatMul weights, per channel) copy of the float32 DiT graph ``src``.

    Inputs and outputs stay float32. Every MatMul/Gemm with a constant weight is quantized, including the input and
    output projections: leaving those in float32 changed the velocity error by < 10 % (3.3 % vs 3.7 % relative on
    random inputs) at a measurable cost in speed. Writes atomically.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    qlog = logging.getLogger()  # the quantizer warns on the root logger about optional pre-processing
    level = qlog.level
    qlog.setLevel(logging.ERROR)
    try:
        with atomic_output(dst) as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm"])  # fmt: skip
    finally:
        qlog.setLevel(level)
    return dst


def onnx_rel_err(ref_path: str | os.PathLike, other_path: str | os.PathLike, feed: dict[str, np.ndarray]) -> float:
    """||other - ref|| / ||ref|| of the ``v`` outputs of two DiT graphs on the same inputs (CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    outs = [
        ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]).run(["v"], feed)[0]
        for p in (ref_path, other_path)
    ]
    return float(np.linalg.norm(outs[1] - outs[0]) / max(np.linalg.norm(outs[0]), 1e-12))


def torch_vs_onnx_max_rel_err(
    model: VSSFlowDiT, onnx_path: str | os.PathLike, T: int, batch: int, seed: int = 0, threads: int = 1
) -> float:
    """Max |torch - ORT| over all outputs, relative to max |torch| (fp32 CPU, random inputs).

    Relative to the output's scale rather than elementwise, since single outputs can be ~0.
    """
    import onnxruntime as ort

    feed = dummy_inputs(model, T, batch, seed)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    (got,) = sess.run(["v"], feed)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            dev = next(model.parameters()).device
            ref = model(**{n: torch.from_numpy(feed[n]).to(dev) for n in input_names(model)}).float().cpu().numpy()
    finally:
        model.train(was_training)
    scale = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    return err / scale if scale > 0 else err


# --------------------------------------------------------------------------- bundle

# Where a dub's sampling starts on the flow path from the teacher's latents. Measured on 12 held-out English clips
# (Whisper WER) with the 1,500-step fine-tune: from noise 1.7, t = 0.5: 1.23, 0.7: 0.58, 0.8: 0.40, 0.9: 0.18; with
# the 2,500-step one (shipped): 0.8: 0.33, 0.9: 0.23, 0.95: 0.10; the warped teacher alone 0.10. The DiT does not
# yet carry the prior's words by itself, so it only finishes the path; lower this when a model does.
PRIOR_START = 0.95
# the text prompt's own guidance weight in prompted bundles; benchmarks/prompt_guidance.py measured it (MODEL.md)
PROMPT_CFG = 6.0


def export_bundle(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    fp16: bool = False,
    *,
    name: str | None = None,
    sampler: SamplerDefaults | None = None,
    include_checkpoint: bool = True,
    int8: bool = True,
    half_weights: bool = False,
) -> Path:
    """``vssflow export CHECKPOINT --out DIR``: checkpoint -> dit.onnx + decoder.onnx -> bundle.

    ``int8`` (float32 exports only) adds ``dit-int8.onnx``, the dynamically quantized DiT the runtime prefers on
    CPU (optional role "dit-int8"; the manifest records its relative error against dit.onnx on random inputs).
    ``half_weights`` then stores the float32 graph's weights as float16 (:func:`store_weights`; half the file, still
    computed in float32; the manifest records the relative error this costs on the same inputs).

    The checkpoint must carry the latent codec tensors (``codec.mean``, ``codec.components``,
    ``codec.scale``). The checkpoint itself is shipped as the optional role "checkpoint" so torch
    comparisons (``vssflow bench``) and fine-tuning work from a bundle. Needs torch and onnx.
    """
    ckpt_path = Path(checkpoint_path)
    ckpt = load_checkpoint(ckpt_path)
    codec_keys = ("codec.mean", "codec.components", "codec.scale")
    if not all(k in ckpt.extra for k in codec_keys):
        raise ModelError(
            f"checkpoint {ckpt_path} has no latent codec tensors ({', '.join(codec_keys)}) — "
            "save the training checkpoint with the codec (LatentCodec.to_tensors()) as extra tensors"
        )
    codec = LatentCodec.from_tensors(
        {k: ckpt.extra[k].float().cpu().numpy() for k in codec_keys},
        mel_per_latent=ckpt.config.audio.mel_per_latent,
    )
    if codec.channels != ckpt.config.latent_channels:
        raise ModelError(
            f"checkpoint {ckpt_path}: codec has {codec.channels} channels but the model "
            f"{ckpt.config.latent_channels} — re-save the checkpoint with its matching codec"
        )
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    ckpt.model.eval()
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        dit = export_dit_onnx(ckpt.model, Path(tmp) / "dit.onnx", fp16=fp16)
        dec = codec.to_onnx(Path(tmp) / "decoder.onnx", n_mels=ckpt.config.audio.n_mels)
        files: dict[str, Path] = {"dit": Path(dit or Path(tmp) / "dit.onnx"), "decoder": Path(dec)}
        if ckpt.config.prior_dim:  # the acoustic prior is a log-mel encoded by the same codec
            files[ENCODER_ROLE] = codec.encoder_to_onnx(Path(tmp) / "encoder.onnx", n_mels=ckpt.config.audio.n_mels)
        extra: dict[str, Any] = {"dit_precision": "fp16" if fp16 else "fp32"}
        feed = dummy_inputs(ckpt.model, ckpt.config.window_frames, batch=2)  # the error checks' inputs
        if int8 and not fp16:
            files[INT8_ROLE] = quantize_dit_int8(files["dit"], Path(tmp) / "dit-int8.onnx")
            extra["dit_int8"] = {
                "method": "onnxruntime dynamic quantization: int8 MatMul weights per channel, uint8 activations",
                "rel_err_vs_fp32": round(onnx_rel_err(files["dit"], files[INT8_ROLE], feed), 5),
            }
        if half_weights and not fp16:
            full = Path(tmp) / "dit-fp32.onnx"
            shutil.copyfile(files["dit"], full)
            store_weights(files["dit"], "fp16")
            err = round(onnx_rel_err(full, files["dit"], feed), 5)
            extra["dit_weights_stored"] = {"as": "fp16", "rel_err_vs_fp32": err}
            full.unlink()
        if include_checkpoint:
            files["checkpoint"] = ckpt_path
        meta = {k: v for k, v in ckpt.metadata.items() if k not in ("format", "config")}
        training: dict[str, Any] = {}
        for k, v in meta.items():
            try:
                training[k] = json.loads(v)
            except (TypeError, ValueError):
                training[k] = v
        return write_bundle(
            out,
            config=ckpt.config,
            files=files,
            phoneme_vocab=list(PHONEME_VOCAB),
            sampler=sampler or SamplerDefaults(prior_start=PRIOR_START if ckpt.config.prior_dim else 0.0,
                                               prompt_cfg=PROMPT_CFG if ckpt.config.prompt_words else None),
            licence=DEFAULT_LICENCE,
            name=name or out.resolve().name,
            created_from=file_sha256(ckpt_path),
            training=training,
            extra_meta=extra,
            optional_roles=("checkpoint", INT8_ROLE, ENCODER_ROLE),
        )


def _half_initializers(model, min_size: int) -> None:
    """Store the graph's large float32 weights as float16 with a Cast back to float32 in front: half the bytes on
    disk (and in the wheel); ONNX Runtime folds the casts when it loads the graph, so it still computes in float32."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    keep, casts = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or arr.size < min_size:
            keep.append(init)
            continue
        keep.append(numpy_helper.from_array(arr.astype(np.float16), f"{init.name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{init.name}__fp16"], [init.name], to=TensorProto.FLOAT))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)


def _int8_initializers(model, min_size: int) -> None:
    """Store the graph's large float32 weights as int8, one symmetric scale per output channel, each behind a
    DequantizeLinear: a quarter of the bytes; the convolutions still compute in float32."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    keep, nodes = [], []
    for init in g.initializer:
        w = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or w.size < min_size or w.ndim < 2:
            keep.append(init)
            continue
        scale = np.maximum(np.abs(w).reshape(len(w), -1).max(axis=1), 1e-12) / 127.0
        q = np.clip(np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        keep += [numpy_helper.from_array(q, f"{init.name}__q"),
                 numpy_helper.from_array(scale.astype(np.float32), f"{init.name}__scale")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{init.name}__q", f"{init.name}__scale"], [init.name],
                                      axis=0))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes += list(g.node)
    del g.node[:]
    g.node.extend(nodes)


def store_weights(path: str | os.PathLike, store: str, min_size: int = 1024) -> None:
    """Rewrite the ONNX graph at ``path`` with its large float32 weights stored smaller, computing the same way:
    ``"fp16"`` (float16 + Cast; ONNX Runtime folds the casts at load) or ``"int8"`` (int8 per output channel +
    DequantizeLinear). Quantize a graph (:func:`quantize_dit_int8`) before storing it smaller: the quantizer only
    sees weights that are initializers of the op itself."""
    import onnx

    model = onnx.load(str(path))
    {"fp16": _half_initializers, "int8": _int8_initializers}[store](model, min_size)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
