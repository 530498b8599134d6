"""Export Resemblyzer's GE2E speaker encoder to ONNX (training side: needs torch and onnx).

Resemblyzer 0.1.4 (Apache-2.0, Resemble AI / Corentin Jemine) ships ``resemblyzer/pretrained.pt``: a
training checkpoint ``{"step", "model_state", "optimizer_state"}`` of plain tensors and lists, read here
with ``torch.load(weights_only=True)``. ``model_state`` holds the network (``lstm.*``, ``linear.*``) and
GE2E's two loss scalars (``similarity_weight``, ``similarity_bias``), which inference does not use.
The optimizer state (two thirds of the file) is dropped.

The network, rebuilt here in plain torch as in ``resemblyzer/voice_encoder.py``::

    mels (B, 160, 40) -> LSTM(40 -> 256, 3 layers, batch_first) -> last layer's final hidden (B, 256)
    -> Linear(256 -> 256) -> ReLU -> x / ||x||_2 -> embeddings (B, 256)

is written to ``speaker_encoder.onnx`` with ``speaker_encoder.json`` beside it (source, licence, both
sha256s, front-end parameters that ``vssflow_cli/speaker.py`` reads back) and the package's licence file
as ``speaker_encoder.LICENSE``. The package itself is never
imported (it pulls in librosa and webrtcvad); only its files are read. Install it without its
dependencies: ``pip install --no-deps Resemblyzer==0.1.4``.

    python -m vssflow_cli.train.export_speaker --out vssflow_cli/data/
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import sys
import types
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from vssflow_cli.export import DEFAULT_OPSET, _quiet_exporter
from vssflow_cli.output import atomic_output, write_text
from vssflow_cli.speaker import EMBED_DIM, FrontEnd

if TYPE_CHECKING:
    import onnx

PACKAGE, VERSION, LICENCE = "Resemblyzer", "0.1.4", "Apache-2.0"
PRETRAINED_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"  # 0.1.4's pretrained.pt
OPSET = DEFAULT_OPSET
HIDDEN, LAYERS = 256, 3


class SpeakerEncoder(nn.Module):
    """Resemblyzer's ``VoiceEncoder`` network without its loading and device code."""

    def __init__(self, n_mels: int = 40, hidden: int = HIDDEN, layers: int = LAYERS, dim: int = EMBED_DIM):
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)

    def forward(self, mels: Tensor) -> Tensor:
        """(B, T, n_mels) power mels -> (B, dim) unit-norm embeddings."""
        _, (hidden, _) = self.lstm(mels)  # hidden: (layers, B, hidden)
        x = torch.relu(self.linear(hidden[-1]))  # (B, dim)
        return x / torch.linalg.vector_norm(x, dim=1, keepdim=True)


def package_dir() -> Path:
    """The installed ``resemblyzer`` package folder, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{PACKAGE} is not installed: pip install --no-deps {PACKAGE}=={VERSION}")
    return Path(next(iter(spec.submodule_search_locations)))


def import_resemblyzer() -> types.ModuleType:
    """Import the ``resemblyzer`` package itself, for reference comparisons (tests, benchmarks).

    Needs librosa and webrtcvad; webrtcvad 2.0.10 reads its own version through ``pkg_resources``,
    which recent setuptools no longer ship, so a stand-in is put there when it is missing.
    """
    stub = None
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pkg_resources")
        stub.get_distribution = lambda name: types.SimpleNamespace(version="unknown")
        sys.modules["pkg_resources"] = stub
    try:
        with warnings.catch_warnings():  # its audio.py imports from scipy.ndimage.morphology (deprecated)
            warnings.simplefilter("ignore", DeprecationWarning)
            import resemblyzer
    finally:
        if stub is not None and sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]  # webrtcvad has read its version; nothing else sees the stand-in
    return resemblyzer


def licence_file() -> bytes:
    """The installed package's licence file (Apache-2.0 text with Resemble.AI's notice), as bytes."""
    from importlib.metadata import distribution

    dist = distribution(PACKAGE)
    path = next((Path(dist.locate_file(f)) for f in dist.files or () if f.name == "LICENSE"), None)
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    if b"Apache License" not in blob or b"Version 2.0" not in blob:
        raise ValueError(f"{PACKAGE}'s installed LICENSE is missing or not the Apache-2.0 text")
    return blob


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_encoder(weights: Path | None = None) -> SpeakerEncoder:
    """The pretrained network (eval mode) from ``pretrained.pt`` (default: the installed package's).

    Raises ``ValueError`` when the file is not 0.1.4's (sha256), ``RuntimeError`` when its tensors do
    not fit the network.
    """
    weights = Path(weights) if weights is not None else package_dir() / "pretrained.pt"
    digest = sha256_file(weights)
    if digest != PRETRAINED_SHA256:
        raise ValueError(f"{weights} has sha256 {digest}, not {PACKAGE} {VERSION}'s {PRETRAINED_SHA256}")
    ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    state = {k: v for k, v in ckpt["model_state"].items() if k.startswith(("lstm.", "linear."))}
    model = SpeakerEncoder()
    model.load_state_dict(state, strict=True)
    return model.eval()


def check_hparams(fe: FrontEnd, hparams_py: Path) -> None:
    """Fail unless ``fe`` (and the network's sizes) equal the constants of Resemblyzer's ``hparams.py``."""
    tree = ast.parse(hparams_py.read_text(encoding="utf-8"))
    hp = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}
    sr = hp["sampling_rate"]
    expected = {
        "sample_rate": sr,
        "n_fft": sr * hp["mel_window_length"] // 1000,
        "hop": sr * hp["mel_window_step"] // 1000,
        "n_mels": hp["mel_n_channels"],
        "partial_frames": hp["partials_n_frames"],
        "target_dbfs": hp["audio_norm_target_dBFS"],
        "hidden": hp["model_hidden_size"],
        "dim": hp["model_embedding_size"],
        "layers": hp["model_num_layers"],
    }
    ours = {**fe.to_dict(), "hidden": HIDDEN, "dim": EMBED_DIM, "layers": LAYERS}
    bad = {k: (ours[k], v) for k, v in expected.items() if ours[k] != v}
    if bad:
        raise ValueError(f"front end differs from {hparams_py} (ours, theirs): {bad}")


def export_onnx(model: SpeakerEncoder, path: Path, frames: int = 160, n_mels: int = 40) -> Path:
    """Write ``model`` as ONNX: ``mels (B, frames, n_mels)`` -> ``embeddings (B, 256)``, batch dynamic.

    ``torch.onnx.export(dynamo=True)``, as the DiT export: each LSTM layer becomes one ONNX ``LSTM`` node.
    The bytes depend only on the weights and the torch/onnxscript versions (exporter metadata is removed).
    """
    import onnx

    example = torch.zeros(2, frames, n_mels)
    with atomic_output(path) as tmp, torch.no_grad(), _quiet_exporter(), warnings.catch_warnings():
        # nn.LSTM's flat weights and torch.export's own deprecation notes: expected, harmless
        warnings.filterwarnings("ignore", message=r".*were assigned during export", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*_check_is_size", category=FutureWarning)
        program = torch.onnx.export(
            model, (example,), None, input_names=["mels"], output_names=["embeddings"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=OPSET,
            dynamo=True, optimize=True, verbose=False,
        )  # fmt: skip
        proto = program.model_proto
        _strip_metadata(proto)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return path


def _strip_metadata(proto: onnx.ModelProto) -> None:
    """Drop the exporter's notes (stack traces with absolute paths, module names, line numbers) from an
    ``onnx.ModelProto``, so that the file's bytes, and its sha256, do not depend on where the export ran."""
    g = proto.graph
    for item in [*g.node, *g.value_info, *g.input, *g.output, *g.initializer]:
        del item.metadata_props[:]
        item.doc_string = ""
    for f in proto.functions:
        for node in f.node:
            del node.metadata_props[:]
            node.doc_string = ""
    del proto.metadata_props[:]


def export(out_dir: Path, weights: Path | None = None) -> dict[str, Any]:
    """Export ``speaker_encoder.onnx`` and ``speaker_encoder.json`` into ``out_dir``; return the json's dict."""
    src = package_dir()
    weights = Path(weights) if weights is not None else src / "pretrained.pt"
    fe = FrontEnd()
    check_hparams(fe, src / "hparams.py")
    model = load_encoder(weights)
    licence = licence_file()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, out_dir / "speaker_encoder.onnx", fe.partial_frames, fe.n_mels)
    meta = {
        "source": {"package": PACKAGE, "version": VERSION, "file": "resemblyzer/pretrained.pt",
                   "url": "https://github.com/resemble-ai/Resemblyzer"},  # fmt: skip
        "licence": LICENCE,
        "licence_file": "speaker_encoder.LICENSE",
        "changes": "network weights converted from the PyTorch checkpoint to ONNX; optimizer state and the GE2E "
        "loss scalars (similarity_weight, similarity_bias) left out",
        "network": "GE2E speaker encoder: LSTM(40->256, 3 layers) -> Linear(256->256) -> ReLU -> L2 normalise",
        "pretrained_sha256": sha256_file(weights),
        "onnx_sha256": sha256_file(onnx_path),
        "inputs": {"mels": ["batch", fe.partial_frames, fe.n_mels]},
        "outputs": {"embeddings": ["batch", EMBED_DIM]},
        "front_end": fe.to_dict(),
        "front_end_notes": "power mel (not log), librosa.feature.melspectrogram defaults (Slaney scale and norm, "
        "centred, zero padded); VAD trimming with silero-vad instead of webrtcvad",
        "exported_with": {"torch": torch.__version__, "onnxscript": _version("onnxscript"), "opset": OPSET},
    }
    with atomic_output(out_dir / "speaker_encoder.LICENSE") as tmp:
        tmp.write_bytes(licence)
    write_text(out_dir / "speaker_encoder.json", json.dumps(meta, indent=1) + "\n")
    return meta


def max_abs_diff(model: SpeakerEncoder, onnx_path: Path, mels: np.ndarray) -> float:
    """Max |torch - ONNX Runtime| of the embeddings of ``mels`` (B, 160, 40)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["embeddings"], {"mels": mels.astype(np.float32)})
    with torch.no_grad():
        ref = model(torch.from_numpy(mels.astype(np.float32))).numpy()
    return float(np.abs(got - ref).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vssflow_cli.train.export_speaker", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for speaker_encoder.onnx and .json")
    ap.add_argument("--weights", type=Path, default=None, help="pretrained.pt (default: the installed package's)")
    a = ap.parse_args(argv)
    try:
        meta = export(a.out, a.weights)
    except (FileNotFoundError, ValueError) as e:
        print(f"export_speaker: {e}", file=sys.stderr)
        return 2
    mels = np.random.default_rng(0).gamma(0.5, 2.0, (4, 160, 40)).astype(np.float32)  # power-mel-like, >= 0
    err = max_abs_diff(load_encoder(a.weights), a.out / "speaker_encoder.onnx", mels)
    print(json.dumps({"onnx_sha256": meta["onnx_sha256"], "max_abs_diff_vs_torch": err}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
