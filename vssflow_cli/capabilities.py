"""Optional capabilities for ``vssflow doctor``: available or not, and the command that enables each.

Unlike doctor's checks (ffmpeg, espeak, the model bundle), a missing optional capability is not a
failure: the core commands work without it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from vssflow_cli.errors import ModelError

GPU_INSTALL = "pip uninstall -y onnxruntime && pip install 'vssflow[gpu]'"


@dataclass(frozen=True)
class Capability:
    name: str
    available: bool
    detail: str
    enable: str = ""  # the command that makes it available ("" when it is)


def transcription() -> Capability:
    """faster-whisper importable and a verified Whisper model found (no download: doctor stays offline)."""
    from vssflow_cli.asr_models import INSTALL, find_asr_model

    if importlib.util.find_spec("faster_whisper") is None:
        return Capability("transcription", False, "faster-whisper is not installed", INSTALL)
    try:
        model = find_asr_model(None, download=False)
    except ModelError as e:
        return Capability("transcription", False, str(e), INSTALL)
    return Capability("transcription", True, model.describe())


def cuda() -> Capability:
    """ONNX Runtime's CUDA provider (what ``--device cuda`` runs the DiT on), tried on a real session.

    A GPU build lists the provider even where the CUDA libraries or the GPU are missing; a session on
    the (small, shipped) voice-activity graph shows whether it really loads.
    """
    import onnxruntime

    from vssflow_cli.vad import VENDORED

    version = onnxruntime.__version__
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return Capability("cuda", False, f"onnxruntime {version} is the CPU build", GPU_INSTALL)
    try:
        providers = onnxruntime.InferenceSession(
            str(VENDORED), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        ).get_providers()
    except Exception as e:  # noqa: BLE001 - any failure to create the session means "not usable"
        providers, why = [], f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    else:
        why = "the session fell back to the CPU (CUDA libraries or GPU missing)"
    if "CUDAExecutionProvider" in providers:
        return Capability("cuda", True, f"onnxruntime {version}, CUDAExecutionProvider loads")
    return Capability("cuda", False, f"onnxruntime {version} has the CUDA provider but {why}",
                      f"install the CUDA and cuDNN versions onnxruntime-gpu {version} requires")  # fmt: skip


def optional_capabilities() -> list[Capability]:
    """Every optional capability, in the order doctor prints them."""
    return [transcription(), cuda()]
