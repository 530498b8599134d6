"""Small DiT configs shared by the model, sampler and export tests."""

from __future__ import annotations

import dataclasses

from vssflow_cli.config import tiny_config

SMALL = dataclasses.replace(
    tiny_config(), name="small", latent_channels=16, width=64, depth=2, heads=2, ffn_hidden=128,
    cross_dim=32, video_dim=24, lip_dim=8, sync_dim=6, phoneme_vocab=40, phoneme_dim=8,
)  # fmt: skip
SMALL_SPK = dataclasses.replace(SMALL, speaker_dim=12)
