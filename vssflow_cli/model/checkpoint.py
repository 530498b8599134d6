"""Training checkpoints: one safetensors file whose metadata holds the model config.

Layout of ``<path>`` (safetensors):
    ``model.<param>``  the DiT state dict
    ``<name>``         extra tensors under their own names (e.g. ``codec.mean``)
    metadata           {"format": "vssflow-ckpt-1", "config": ModelConfig.to_json(), ...caller's}
A ``<path>.json`` beside it repeats the config (and the metadata) for humans and tools.
The model is rebuilt from the stored config alone; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vssflow_cli.config import ModelConfig
from vssflow_cli.errors import ModelError
from vssflow_cli.model.dit import VSSFlowDiT
from vssflow_cli.output import atomic_output, write_text

FORMAT = "vssflow-ckpt-1"
MODEL_PREFIX = "model."


@dataclass
class Checkpoint:
    model: VSSFlowDiT
    config: ModelConfig
    extra: dict[str, Tensor]
    metadata: dict[str, str]


def save_checkpoint(
    path: str | os.PathLike,
    model: VSSFlowDiT,
    extra: dict[str, np.ndarray | Tensor] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` (+ ``extra`` tensors, + string ``metadata``) to one safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {MODEL_PREFIX + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    for name, value in (extra or {}).items():
        if name.startswith(MODEL_PREFIX):
            raise ValueError(f"extra tensor {name!r} collides with the model weights: rename it")
        t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        tensors[name] = t.detach().cpu().contiguous().clone()
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(format=FORMAT, config=model.config.to_json())

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    sidecar = {"format": FORMAT, "config": model.config.to_dict(),
               "metadata": {k: v for k, v in meta.items() if k not in ("format", "config")}}
    write_text(path.with_name(path.name + ".json"), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from the config stored in the checkpoint and load its weights."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} not found: check the path or train/download one first")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ModelError(f"checkpoint {path} is not a readable safetensors file ({e}): re-save it") from e
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ModelError(f"checkpoint {path} has format {meta.get('format')!r}, expected {FORMAT!r}: "
                         "save it with vssflow_cli.model.checkpoint.save_checkpoint")
    config = ModelConfig.from_json(meta["config"])
    with torch.device("meta"):  # no wasted random init: weights are assigned below
        model = VSSFlowDiT(config)
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ModelError(f"checkpoint {path} does not match its stored config ({first}): re-export it") from e
    model.to(map_location)
    extra = {k: v for k, v in tensors.items() if not k.startswith(MODEL_PREFIX)}
    return Checkpoint(model=model, config=config, extra=extra, metadata=meta)
