"""Untrained bundles: a randomly initialised DiT of any config, exported like a trained one.

For timing shapes before weights exist (``benchmarks/run_bench.py --random``), the untrained control of
``vssflow eval``, and the test suite's small bundles. Needs torch and onnx.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vssflow_cli.audio import LatentCodec
from vssflow_cli.config import ModelConfig
from vssflow_cli.export import export_bundle
from vssflow_cli.model.checkpoint import save_checkpoint
from vssflow_cli.model.dit import VSSFlowDiT


def random_codec(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Tensors of a random orthonormal latent codec matching ``config``."""
    rng = np.random.default_rng(seed)
    k = config.audio.mel_per_latent * config.audio.n_mels
    q, _ = np.linalg.qr(rng.standard_normal((k, config.latent_channels)))
    return LatentCodec(
        mean=(rng.standard_normal(k) - 4.0).astype(np.float32),
        components=q.T.astype(np.float32),
        scale=np.float32(1.0),
        mel_per_latent=config.audio.mel_per_latent,
    ).to_tensors()


def random_bundle(
    out_dir: str | os.PathLike,
    config: ModelConfig,
    *,
    seed: int = 0,
    include_checkpoint: bool = True,
    codec: Mapping[str, np.ndarray] | None = None,
    name: str | None = None,
    note: str = "random init (benchmark/test bundle)",
) -> Path:
    """An untrained bundle of ``config`` (random DiT incl. its output layer) with ``codec`` (default: random)."""
    torch.manual_seed(seed)
    model = VSSFlowDiT(config).eval()
    with torch.no_grad():  # the init zeroes the output layer (v = 0): make outputs non-trivial
        torch.nn.init.normal_(model.out_proj.weight, std=0.02)
    tensors = dict(codec) if codec is not None else random_codec(config, seed)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "model.safetensors", model, extra=tensors, metadata={"note": note})
        return export_bundle(ckpt, out_dir, include_checkpoint=include_checkpoint, name=name or f"random-{config.name}")
