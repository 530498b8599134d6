"""Lightning module for joint V2S + VisualTTS flow-matching training, with EMA and safetensors resume state.

Lightning runs the loop (one CPU process here, DDP over many GPUs elsewhere). Resume state is written as
safetensors (model, EMA, optimizer moments, codec) plus JSON metadata, never as a pickle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch

from vssflow_cli.audio import LatentCodec
from vssflow_cli.config import ModelConfig, condition_names
from vssflow_cli.model.dit import VSSFlowDiT
from vssflow_cli.model.flow import flow_loss
from vssflow_cli.output import atomic_output


class FlowModule(L.LightningModule):
    """Wraps :class:`VSSFlowDiT`; a batch is a dict with ``latent`` (B, T, C) and the conditions of config.py."""

    def __init__(
        self,
        config: ModelConfig,
        lr: float = 5e-4,
        warmup: int = 300,
        total_steps: int = 100_000,
        ema_decay: float = 0.999,
        weight_decay: float = 0.01,
        step_offset: int = 0,
    ) -> None:
        super().__init__()
        self.config = config
        self.model = VSSFlowDiT(config)
        self.ema = VSSFlowDiT(config)
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        self.lr, self.warmup, self.total_steps = lr, warmup, total_steps
        self.ema_decay, self.weight_decay = ema_decay, weight_decay
        self.step_offset = step_offset
        self._pending_opt_state: dict | None = None

    @property
    def step(self) -> int:
        return self.step_offset + int(self.global_step)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        conds = {k: batch[k] for k in condition_names(self.config)}
        loss = flow_loss(self.model, batch["latent"], conds)
        self.log("loss", loss, prog_bar=True, on_step=True, batch_size=batch["latent"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        d = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(pm, 1 - d)

    def lr_factor(self, step: int) -> float:
        s = step + self.step_offset
        if s < self.warmup:
            return (s + 1) / self.warmup
        progress = min(1.0, (s - self.warmup) / max(1, self.total_steps - self.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
            betas=(0.9, 0.99),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        if self._pending_opt_state is not None:
            opt = self.optimizers().optimizer
            opt.load_state_dict(self._pending_opt_state)
            self._pending_opt_state = None


def save_state(path: Path, module: FlowModule, codec: LatentCodec, optimizer: torch.optim.Optimizer | None) -> None:
    """Write the resume state (safetensors + metadata) atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in module.model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().contiguous() for k, v in module.ema.state_dict().items()})
    tensors.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in codec.to_tensors().items()})
    groups = []
    if optimizer is not None:
        sd = optimizer.state_dict()
        for i, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
        groups = sd["param_groups"]
    meta = {
        "format": "vssflow-train-state-1",
        "config": module.config.to_json(),
        "step": str(module.step),
        "param_groups": json.dumps(groups),
    }
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_state(
    path: Path,
) -> tuple[ModelConfig, int, dict[str, torch.Tensor], dict[str, torch.Tensor], LatentCodec, dict | None]:
    """Read a resume state: (config, step, model sd, ema sd, codec, optimizer state dict or None)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = ModelConfig.from_json(meta["config"])
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema_sd = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    codec = LatentCodec.from_tensors(
        {k: v.numpy() for k, v in tensors.items() if k.startswith("codec.")}, config.audio.mel_per_latent
    )
    groups = json.loads(meta.get("param_groups", "[]"))
    opt_state = None
    if groups:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        opt_state = {"state": state, "param_groups": groups}
    return config, int(meta["step"]), model_sd, ema_sd, codec, opt_state
