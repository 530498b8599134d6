"""VSSFlow's Diffusion Transformer: one flow-matching velocity network for foley and speech.

Everything the network needs is in this file; it is built from a :class:`ModelConfig` alone.

Conditions enter two ways (names, shapes and roles: ``vssflow_cli.config.CONDITIONS``):

* in-context: ``[x, lip, phoneme_embedding, sync, prior?]`` concatenated along channels, projected to
  ``width`` by a 1x1 convolution (a Linear over channels), and handled by self-attention with
  rotary position embeddings; a global timestep token is prepended (rotary length T + 1);
* cross-attention: video features (2-layer MLP + sinusoidal frame-index embedding) preceded
  by an optional speaker token and followed by the optional text-prompt tokens (one learned
  embedding per word plus a learned position; padding ids are masked out of attention, so a
  model given no prompt computes exactly what it would without the prompt input).

Phoneme id 0 embeds to a fixed zero vector, so "all conditions zeroed" (the classifier-free
guidance unconditional branch) is exactly zeros / id 0 in every input.

The forward pass has no Python control flow on tensor values and computes its rotary and
positional tables from the runtime length, so it exports to ONNX with dynamic batch and T.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow_cli.config import ModelConfig

TIME_FREQ_DIM = 256  # sinusoidal features of the flow time before the MLP
TIME_SCALE = 1000.0  # t in [0, 1] -> [0, 1000] so the sinusoid spans its usual range
ROPE_BASE = 10000.0
PROMPT_INIT_STD = 0.5  # prompt word embeddings start at the size of the video tokens they sit beside


def sinusoidal_embedding(pos: Tensor, dim: int) -> Tensor:
    """Transformer sinusoids: (...,) float positions -> (..., dim) as [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=pos.device, dtype=torch.float32) / half
    )  # (half,)
    angles = pos.float().unsqueeze(-1) * freqs  # (..., half)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (..., 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def rotary_tables(length: Tensor | int, head_dim: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos/sin tables for positions 0..length-1: each (length, head_dim // 2)."""
    inv_freq = ROPE_BASE ** (
        -torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    )  # (D/2,)
    pos = torch.arange(length, device=device, dtype=torch.float32)  # (S,)
    angles = pos.unsqueeze(-1) * inv_freq  # (S, D/2)
    return torch.cos(angles), torch.sin(angles)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (i, i + D/2) of x (B, H, S, D) by the position angles."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, S, D/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, key_mask: Tensor | None) -> Tensor:
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1))  # (B, S, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, S, D) each
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)  # (B, H, S, D)
        return self.out(y.transpose(1, 2).flatten(2))  # (B, S, W)


class CrossAttention(nn.Module):
    def __init__(self, width: int, cross_dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (width // heads) ** -0.5
        self.q = nn.Linear(width, width, bias=False)
        self.kv = nn.Linear(cross_dim, 2 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor, ctx: Tensor, key_mask: Tensor | None) -> Tensor:
        q = self.q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, S, D)
        kv = self.kv(ctx).unflatten(-1, (2, self.heads, -1))  # (B, L, 2, H, D)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, D) each
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, L)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)  # (B, H, S, D)
        return self.out(y.transpose(1, 2).flatten(2))  # (B, S, W)


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(width, 2 * hidden, bias=False)  # gate and value, fused
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.up(x).chunk(2, dim=-1)  # (B, S, F) each
        return self.down(F.silu(gate) * value)  # (B, S, W)


class Block(nn.Module):
    """Pre-LN self-attention (RoPE) -> pre-LN cross-attention -> pre-LN SwiGLU, all residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_self = nn.LayerNorm(cfg.width)
        self.self_attn = SelfAttention(cfg.width, cfg.heads)
        self.norm_cross = nn.LayerNorm(cfg.width)
        self.cross_attn = CrossAttention(cfg.width, cfg.cross_dim, cfg.heads)
        self.norm_ffn = nn.LayerNorm(cfg.width)
        self.ffn = SwiGLU(cfg.width, cfg.ffn_hidden)

    def forward(
        self,
        x: Tensor,
        ctx: Tensor,
        cos: Tensor,
        sin: Tensor,
        self_mask: Tensor | None = None,
        cross_mask: Tensor | None = None,
    ) -> Tensor:
        x = x + self.self_attn(self.norm_self(x), cos, sin, self_mask)  # (B, S, W)
        x = x + self.cross_attn(self.norm_cross(x), ctx, cross_mask)
        return x + self.ffn(self.norm_ffn(x))


class VSSFlowDiT(nn.Module):
    """Velocity network v(x_t, t | conditions) for the latent channels.

    Args of :meth:`forward` (B = batch, T = latent frames):
        x: (B, T, latent_channels) float, the noisy latent.
        t: (B,) float flow time in [0, 1].
        phonemes, lip, sync, video, speaker, prior, prompt: the conditions, in the order, shapes and
            dtypes of ``vssflow_cli.config.CONDITIONS``; ``speaker`` is required iff ``speaker_dim > 0``,
            ``prior`` iff ``prior_dim > 0``, ``prompt`` (B, prompt_tokens) int64 iff ``prompt_words``.
        frame_mask: optional (B, T) bool, True = real frame. Padded frames are hidden from
            attention keys, so valid frames see exactly what an unpadded run would. Training
            only; the exported graph has no mask.
    Returns:
        v: (B, T, latent_channels) velocity.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        cfg = config
        if cfg.width % cfg.heads or (cfg.width // cfg.heads) % 2:
            raise ValueError(f"width {cfg.width} must split into {cfg.heads} heads of even size")
        self.config = cfg
        self.phoneme_emb = nn.Embedding(cfg.phoneme_vocab, cfg.phoneme_dim, padding_idx=0)
        self.in_proj = nn.Linear(cfg.in_channels, cfg.width)  # the 1x1 conv over channels
        self.time_mlp = nn.Sequential(
            nn.Linear(TIME_FREQ_DIM, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width)
        )
        self.video_mlp = nn.Sequential(
            nn.Linear(cfg.video_dim, cfg.cross_dim), nn.SiLU(), nn.Linear(cfg.cross_dim, cfg.cross_dim)
        )
        self.speaker_proj = nn.Linear(cfg.speaker_dim, cfg.cross_dim) if cfg.speaker_dim > 0 else None
        self.prompt_emb = self.prompt_pos = None
        if cfg.prompt_words:
            self.prompt_emb = nn.Embedding(len(cfg.prompt_words) + 2, cfg.cross_dim, padding_idx=0)
            self.prompt_pos = nn.Parameter(torch.zeros(cfg.prompt_tokens, cfg.cross_dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.latent_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.phoneme_emb.weight, std=0.02)
        with torch.no_grad():
            self.phoneme_emb.weight[0].zero_()  # id 0 = no speech = the zeroed condition
        if self.prompt_emb is not None:
            # at the scale of the video tokens (elements ~0.5): tokens 20x smaller drew almost no attention, and a
            # fine-tune from a prompt-less model at std 0.02 moved the output by < 1 % after 2,250 steps
            nn.init.normal_(self.prompt_emb.weight, std=PROMPT_INIT_STD)
            nn.init.normal_(self.prompt_pos, std=0.1)
            with torch.no_grad():
                self.prompt_emb.weight[0].zero_()
        # Zero output: the untrained model predicts v = 0, a stable start for flow matching.
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def condition_tokens(self, video: Tensor, speaker: Tensor | None, prompt: Tensor | None = None) -> Tensor:
        """Cross-attention tokens: [speaker?, video frames, prompt words?] -> (B, (1) + T + (P), cross_dim)."""
        T = video.shape[1]
        pos = sinusoidal_embedding(torch.arange(T, device=video.device), self.config.cross_dim)
        ctx = self.video_mlp(video) + pos.to(video.dtype)  # (B, T, Cc)
        if self.speaker_proj is not None:
            if speaker is None:
                raise ValueError("this model has speaker_dim > 0: pass speaker (B, speaker_dim)")
            spk = self.speaker_proj(speaker).unsqueeze(1)  # (B, 1, Cc)
            ctx = torch.cat([spk, ctx], dim=1)  # (B, 1 + T, Cc)
        if self.prompt_emb is not None:
            if prompt is None:
                raise ValueError("this model takes a text prompt: pass prompt (B, prompt_tokens) ids, zeros = none")
            words = self.prompt_emb(prompt).to(ctx.dtype) + self.prompt_pos.to(ctx.dtype)  # (B, P, Cc)
            ctx = torch.cat([ctx, words], dim=1)  # (B, L, Cc)
        return ctx

    def cross_mask(self, frame_mask: Tensor | None, prompt: Tensor | None, batch: int, T: int) -> Tensor | None:
        """(B, L) bool key mask of the cross-attention tokens, True = attend; None = attend to all."""
        if frame_mask is None and self.prompt_emb is None:
            return None
        dev = prompt.device if prompt is not None else frame_mask.device
        m = torch.ones(batch, T, dtype=torch.bool, device=dev) if frame_mask is None else frame_mask.bool()
        if self.speaker_proj is not None:
            m = torch.cat([torch.ones_like(m[:, :1]), m], dim=1)
        if self.prompt_emb is not None:
            m = torch.cat([m, prompt != 0], dim=1)  # padding words are no tokens
        return m

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        phonemes: Tensor,
        lip: Tensor,
        sync: Tensor,
        video: Tensor,
        speaker: Tensor | None = None,
        prior: Tensor | None = None,
        prompt: Tensor | None = None,
        frame_mask: Tensor | None = None,
    ) -> Tensor:
        T = x.shape[1]
        ph = self.phoneme_emb(phonemes).to(x.dtype)  # (B, T, P)
        parts = [x, lip, ph, sync]
        if self.config.prior_dim > 0:
            if prior is None:
                raise ValueError("this model has prior_dim > 0: pass prior (B, T, prior_dim)")
            parts.append(prior.to(x.dtype))  # (B, T, prior_dim)
        h = self.in_proj(torch.cat(parts, dim=-1))  # (B, T, W)
        t_freq = sinusoidal_embedding(t * TIME_SCALE, TIME_FREQ_DIM).to(x.dtype)  # (B, 256)
        t_tok = self.time_mlp(t_freq).unsqueeze(1)  # (B, 1, W)
        h = torch.cat([t_tok, h], dim=1)  # (B, T + 1, W)
        ctx = self.condition_tokens(video, speaker, prompt)  # (B, L, Cc)

        cos, sin = rotary_tables(T + 1, self.config.width // self.config.heads, x.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T + 1, D/2)
        self_mask = None
        if frame_mask is not None:
            m = frame_mask.bool()
            self_mask = torch.cat([torch.ones_like(m[:, :1]), m], dim=1)  # (B, T + 1)
        cross_mask = self.cross_mask(frame_mask, prompt, x.shape[0], T)  # (B, L) or None

        for block in self.blocks:
            h = block(h, ctx, cos, sin, self_mask, cross_mask)  # (B, T + 1, W)
        return self.out_proj(self.norm_out(h[:, 1:]))  # (B, T, latent_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all of them; the model has no frozen parts)."""
    return sum(p.numel() for p in model.parameters())


def step_flops(config: ModelConfig, T: int) -> int:
    """Analytic FLOPs of one forward at batch 1 and T frames (multiply-add = 2 FLOPs).

    Counts every matrix product: linear layers and the attention score / value products.
    Elementwise work (norms, activations, softmax, rotary) is left out; it is well under 1 %.
    """
    c = config
    W, F_, Cc = c.width, c.ffn_hidden, c.cross_dim
    S = T + 1  # time token + frames
    P = c.prompt_tokens if c.prompt_words else 0
    L = T + (1 if c.speaker_dim > 0 else 0) + P  # cross-attention tokens
    mm = 0
    mm += T * c.in_channels * W  # in_proj
    mm += TIME_FREQ_DIM * W + W * W  # time MLP (one token)
    mm += T * (c.video_dim * Cc + Cc * Cc)  # video MLP
    mm += c.speaker_dim * Cc  # speaker token (0 if absent)
    per_block = (
        S * W * 3 * W + 2 * S * S * W + S * W * W  # self-attention: qkv, QK^T and AV, out
        + S * W * W + L * Cc * 2 * W + 2 * S * L * W + S * W * W  # cross: q, kv, QK^T and AV, out
        + S * W * 2 * F_ + S * F_ * W  # SwiGLU
    )
    mm += c.depth * per_block
    mm += T * W * c.latent_channels  # out_proj
    return 2 * mm
