"""PyTorch side of vssflow: the DiT, flow-matching loss, checkpoints (training and export only).

The inference runtime never imports this package (it needs torch). Names are loaded lazily so
``import vssflow_cli.model`` stays cheap until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VSSFlowDiT": "dit",
    "count_parameters": "dit",
    "step_flops": "dit",
    "flow_loss": "flow",
    "drop_conditions": "flow",
    "torch_velocity": "flow",
    "Checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
