"""Flow matching on the optimal-transport path, kept apart from the network.

x0 ~ N(0, I) is noise, x1 the data latent, x_t = (1 - t) x0 + t x1, and the network regresses
the constant velocity x1 - x0 (MSE over the latent channels, padded frames masked out).

Also here: classifier-free-guidance condition dropout for training, and :func:`torch_velocity`,
which adapts a torch model to the numpy velocity signature of :mod:`vssflow_cli.sampler`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

Conds = dict[str, Tensor]
TimeSchedule = Literal["uniform", "logit_normal"]


def _batch_size(conds: Conds) -> int:
    return next(iter(conds.values())).shape[0]


SPARED = ("prompt",)
"""Conditions kept in half of the dropped samples: the model also learns "this prompt and nothing else", the
unconditional branch of a negative prompt (``vssflow foley --negative-prompt``)."""


def drop_conditions(conds: Conds, p: float, generator: torch.Generator | None = None) -> Conds:
    """Zero ALL conditions of each sample together with probability ``p`` (those of :data:`SPARED` only in half
    of the dropped samples).

    conds: name -> (B, ...) tensors (phoneme ids become 0 = no speech). Returns a new dict.
    """
    if p <= 0 or not conds:
        return dict(conds)
    first = next(iter(conds.values()))
    dev = generator.device if generator is not None else first.device
    B = _batch_size(conds)
    keep = torch.rand(B, generator=generator, device=dev).to(first.device) >= p  # (B,)
    spare = keep
    if any(name in conds for name in SPARED):
        spare = keep | (torch.rand(B, generator=generator, device=dev).to(first.device) < 0.5)  # (B,)
    out = {}
    for name, c in conds.items():
        k = (spare if name in SPARED else keep).reshape(-1, *([1] * (c.dim() - 1)))  # (B, 1, ...)
        out[name] = torch.where(k, c, torch.zeros_like(c))
    return out


def sample_t(
    batch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    schedule: TimeSchedule = "uniform",
) -> Tensor:
    """Flow times (batch,) in [0, 1]: uniform, or logit-normal (sigmoid of N(0, 1))."""
    dev = generator.device if generator is not None else torch.device(device)
    if schedule == "uniform":
        t = torch.rand(batch, generator=generator, device=dev)
    elif schedule == "logit_normal":
        t = torch.sigmoid(torch.randn(batch, generator=generator, device=dev))
    else:
        raise ValueError(f"unknown time schedule {schedule!r}: use 'uniform' or 'logit_normal'")
    return t.to(device)


def flow_loss(
    model: nn.Module,
    x1: Tensor,
    conds: Conds,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    cond_dropout: float | None = None,
    *,
    t: Tensor | None = None,
    x0: Tensor | None = None,
    schedule: TimeSchedule = "uniform",
) -> Tensor:
    """Conditional flow-matching loss (scalar).

    x1: (B, T, C) data latents; conds: the model's condition inputs (see config.py);
    mask: optional (B, T), 1/True = real frame; padded frames contribute nothing and are hidden
    from the model's attention. cond_dropout: probability of zeroing all conditions of a sample
    (None = ``model.config.cond_dropout``). t (B,) and x0 (B, T, C) may be fixed by the caller;
    otherwise they are drawn from ``generator``.
    """
    B = x1.shape[0]
    if cond_dropout is None:
        cond_dropout = getattr(model, "module", model).config.cond_dropout  # DDP-wrapped or not
    if t is None:
        t = sample_t(B, generator, x1.device, schedule)
    if x0 is None:
        dev = generator.device if generator is not None else x1.device
        x0 = torch.randn(x1.shape, generator=generator, device=dev, dtype=x1.dtype).to(x1.device)
    conds = drop_conditions(conds, cond_dropout, generator)
    tb = t.to(x1.dtype).reshape(B, 1, 1)
    xt = (1 - tb) * x0 + tb * x1  # (B, T, C)
    target = x1 - x0  # (B, T, C)
    v = model(xt, t.to(x1.dtype), frame_mask=mask, **conds)  # (B, T, C)
    err = (v.float() - target.float()).square()  # (B, T, C)
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).unsqueeze(-1)  # (B, T, 1)
    return (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)


def torch_velocity(
    model: nn.Module, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], np.ndarray]:
    """Wrap a torch DiT as a numpy velocity fn(x (B,T,C), t (B,), conds) -> (B,T,C) float32.

    Used with :func:`vssflow_cli.sampler.sample`, so torch and ONNX Runtime share one sampler.
    """
    device = torch.device(device)

    def to_torch(name: str, a: np.ndarray) -> Tensor:
        tt = torch.from_numpy(np.ascontiguousarray(a)).to(device)
        return tt.to(dtype) if tt.is_floating_point() else tt.long()

    def fn(x: np.ndarray, t: np.ndarray, conds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            tc = {k: to_torch(k, v) for k, v in conds.items()}
            v = model(to_torch("x", x), to_torch("t", t), **tc)
            return v.float().cpu().numpy()

    return fn
