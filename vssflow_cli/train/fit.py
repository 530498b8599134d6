"""Train the joint model on the offline corpus: ``python -m vssflow_cli.train.fit --corpus DIR --out RUN``.

Resumes from ``RUN/state.safetensors`` when it exists (model, EMA, optimizer, codec, step), so a long CPU training
can run across sessions. Writes ``RUN/ema.safetensors`` (the EMA weights as a model checkpoint with the codec inside,
the input of ``vssflow export``) every ``--save-every`` steps and at the end. Runs DDP with ``--devices N``
(gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from vssflow_cli.audio import LatentCodec
from vssflow_cli.config import PRESETS, ModelConfig
from vssflow_cli.model.checkpoint import save_checkpoint
from vssflow_cli.train.dataset import WindowSampler, fit_codec, load_clips
from vssflow_cli.train.module import FlowModule, load_state, save_state


class WindowStream(IterableDataset):
    """Endless stream of collated batches; each DDP rank (and each epoch) draws from its own seed."""

    def __init__(self, sampler: WindowSampler, batch_size: int, seed: int) -> None:
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def __iter__(self):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        rng = np.random.default_rng([self.seed, rank, int(time.time())])
        while True:
            b = self.sampler.batch(rng, self.batch_size)
            yield {k: torch.from_numpy(v) for k, v in b.items()}


class SaveEvery(L.Callback):
    """Write the resume state and the EMA checkpoint every ``every`` steps (rank 0 only)."""

    def __init__(self, out: Path, codec, every: int, metadata: dict[str, str] | None = None) -> None:
        self.out, self.codec, self.every = out, codec, every
        self.metadata = dict(metadata or {})
        self.t0 = time.time()

    def on_train_batch_end(self, trainer, module: FlowModule, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero and module.step % 25 == 0:
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            rate = (time.time() - self.t0) / max(1, trainer.global_step)
            print(f"step {module.step} loss {loss:.4f} {rate:.2f}s/step", file=sys.stderr, flush=True)
        if trainer.is_global_zero and module.step % self.every == 0:
            self.save(trainer, module)

    def on_train_end(self, trainer, module: FlowModule) -> None:
        if trainer.is_global_zero:
            self.save(trainer, module)

    def save(self, trainer, module: FlowModule) -> None:
        save_state(self.out / "state.safetensors", module, self.codec, trainer.optimizers[0])
        save_checkpoint(
            self.out / "ema.safetensors",
            module.ema,
            extra=self.codec.to_tensors(),
            metadata={"step": str(module.step), "trained_on": "vssflow offline corpus", **self.metadata},
        )


def build_config(name: str, overrides: list[str]) -> ModelConfig:
    return apply_overrides(PRESETS[name](), overrides)


def apply_overrides(cfg: ModelConfig, overrides: list[str]) -> ModelConfig:
    """``cfg`` with ``field=value`` overrides (``--set``), each value cast to the field's type."""
    for o in overrides:
        k, v = o.split("=", 1)
        cfg = dataclasses.replace(cfg, **{k: type(getattr(cfg, k))(v)})
    return cfg


def init_from_checkpoint(
    path: Path,
) -> tuple[ModelConfig, dict[str, torch.Tensor], LatentCodec, dict[str, str]]:
    """(config, model state dict, codec, metadata to carry) of a trainer checkpoint (``ema.safetensors``).

    The metadata records where the run started: ``init_from`` (sha256 of the file) and ``init_step`` (the steps
    behind it, its own ``init_step`` included), so a chain of runs keeps its total.
    """
    from vssflow_cli.bundle import file_sha256
    from vssflow_cli.model.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    codec_t = {k: v.numpy() for k, v in ck.extra.items() if k.startswith("codec.")}
    if not codec_t:
        raise SystemExit(f"{path} holds no codec tensors: pass a checkpoint written by vssflow_cli.train.fit")
    before = int(ck.metadata.get("init_step", 0)) + int(ck.metadata.get("step", 0))
    meta = {"init_from": file_sha256(path), "init_step": str(before)}
    return ck.config, ck.model.state_dict(), LatentCodec.from_tensors(codec_t, ck.config.audio.mel_per_latent), meta


def adapt_state_dict(sd: dict[str, torch.Tensor], config: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint's weights for a config that adds inputs: in-context channels at the end (e.g. ``prior_dim``)
    or the text prompt (``prompt_words``).

    The new input columns of ``in_proj`` start at zero and new modules at their initialisation; a prompt of
    padding ids is masked out, so the adapted model computes exactly what the checkpoint did until training (or a
    prompt) makes it use them.
    """
    from vssflow_cli.model.dit import VSSFlowDiT

    out = dict(sd)
    torch.manual_seed(seed)
    fresh = VSSFlowDiT(config).state_dict()
    out |= {k: v for k, v in fresh.items() if k not in out}
    w = out["in_proj.weight"]  # (width, in_channels of the checkpoint)
    if w.shape[1] < config.in_channels:
        extra = torch.zeros(w.shape[0], config.in_channels - w.shape[1], dtype=w.dtype)
        out["in_proj.weight"] = torch.cat([w, extra], dim=1)
    elif w.shape[1] > config.in_channels:
        raise SystemExit(f"the checkpoint has {w.shape[1]} input channels, more than the config's {config.in_channels}")
    return out


def speech_weights(clips: list, english_weight: float) -> dict[str, float] | None:
    """Per-clip sampling weights for speech clips: English ones ``english_weight`` times the others (None = uniform)."""
    if english_weight == 1.0:
        return None
    return {c.clip_id: english_weight if c.lang == "en" else 1.0 for c in clips if c.kind == "speech"}


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """One training run (``vssflow train`` / ``python -m vssflow_cli.train.fit``); resumes from ``out``."""

    corpus: Path
    out: Path
    config: str = "tiny"  # preset name
    set: tuple[str, ...] = ()  # config overrides, e.g. ("depth=4",)
    steps: int = 20000  # total steps, including resumed ones
    batch: int = 16
    lr: float = 5e-4
    warmup: int = 300
    save_every: int = 200
    devices: int = 1
    accelerator: str = "cpu"
    threads: int = 0  # torch threads per process (0 = torch default)
    seed: int = 0
    limit_clips: int | None = None
    init: Path | None = None  # start a new run from these weights and codec (fresh optimizer and schedule)
    speech_weight: float = 1.0  # draw English speech clips this many times as often as other speech clips
    prompts: bool = False  # give a new run the text prompt, its vocabulary from the training clips' captions
    modes: tuple[str, ...] = ()  # window mode probabilities, e.g. ("sound=0.7", "mute=0.3"); () = the defaults


def main(argv: list[str] | None = None) -> int:
    d = FitOptions(Path(), Path())
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default=d.config, choices=sorted(PRESETS))
    ap.add_argument("--set", action="append", default=[], help="override a config field, e.g. --set depth=4")
    ap.add_argument("--steps", type=int, default=d.steps, help="total steps (including resumed ones)")
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--warmup", type=int, default=d.warmup)
    ap.add_argument("--save-every", type=int, default=d.save_every)
    ap.add_argument("--devices", type=int, default=d.devices)
    ap.add_argument("--accelerator", default=d.accelerator)
    ap.add_argument("--threads", type=int, default=d.threads, help="torch threads per process (0 = torch default)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--limit-clips", type=int, default=None)
    ap.add_argument("--init", type=Path, default=None,
                    help="start a new run from this model checkpoint (weights and codec; fresh optimizer and schedule)")
    ap.add_argument("--speech-weight", type=float, default=d.speech_weight,
                    help="draw English speech clips this many times as often as other speech clips")
    ap.add_argument("--prompts", action="store_true",
                    help="add the foley text prompt (vocabulary from the training captions) to a new run")
    ap.add_argument("--modes", default="",
                    help="window mode probabilities, e.g. sound=0.6,add=0.2,mute=0.2 (default: the sampler's mix)")
    a = vars(ap.parse_args(argv))
    modes = tuple(m for m in a.pop("modes").split(",") if m)
    return fit(FitOptions(**(a | {"set": tuple(a["set"]), "modes": modes})))


def parse_modes(modes: tuple[str, ...]) -> dict[str, float] | None:
    """``("sound=0.7", ...)`` -> {mode: probability}; None for the sampler's defaults."""
    from vssflow_cli.train.dataset import MODES

    out = {}
    for m in modes:
        name, _, p = m.partition("=")
        if name not in MODES:
            raise SystemExit(f"--modes: unknown mode {name!r}; use {', '.join(MODES)}")
        out[name] = float(p)
    return out or None


def with_prompts(config: ModelConfig, clips: list) -> ModelConfig:
    """``config`` with the prompt vocabulary of ``clips``' prompts (sorted words; see vssflow_cli.prompt)."""
    from vssflow_cli.prompt import vocabulary

    return dataclasses.replace(config, prompt_words=vocabulary(c.prompt for c in clips if c.prompt))


def fit(args: FitOptions) -> int:
    """Train (or resume) a run; returns the exit code (3: the corpus has no training clips)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "state.safetensors"
    init_path = args.out / "init.json"  # where a --init run started; kept for its resumes
    init_meta = json.loads(init_path.read_text()) if init_path.exists() else {}
    if state_path.exists():
        config, step, model_sd, ema_sd, codec, opt_state = load_state(state_path)
        print(f"resuming from {state_path} at step {step}", file=sys.stderr)
    elif args.init is not None:
        config, model_sd, codec, init_meta = init_from_checkpoint(args.init)
        config = apply_overrides(config, list(args.set))  # e.g. --set prior_dim=64 over the checkpoint's config
        step, ema_sd, opt_state = 0, None, None
        init_path.write_text(json.dumps(init_meta))
        print(f"starting from the weights and codec of {args.init}", file=sys.stderr)
    else:
        config, step = build_config(args.config, list(args.set)), 0
        model_sd, ema_sd, codec, opt_state = None, None, None, None
    clips = load_clips(args.corpus, "train", config.window_frames, args.limit_clips)
    if not clips:
        print(f"no training clips in {args.corpus}: build the corpus with `vssflow data build`", file=sys.stderr)
        return 3
    if args.prompts and not state_path.exists():
        config = with_prompts(config, clips)
        print(f"prompt vocabulary: {len(config.prompt_words)} words", file=sys.stderr)
    if args.init is not None and not state_path.exists():
        model_sd = ema_sd = adapt_state_dict(model_sd, config, args.seed)
    if codec is None:
        codec = fit_codec(clips, config)
    n_speech = sum(c.kind == "speech" for c in clips)
    print(f"{len(clips)} clips ({n_speech} speech), codec {codec.channels} ch", file=sys.stderr)
    (args.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    module = FlowModule(config, lr=args.lr, warmup=args.warmup, total_steps=args.steps, step_offset=step)
    if model_sd is not None:
        module.model.load_state_dict(model_sd)
        module.ema.load_state_dict(ema_sd)
        module._pending_opt_state = opt_state
    remaining = args.steps - step
    if remaining <= 0:
        print(f"already at step {step} >= {args.steps}", file=sys.stderr)
        return 0
    sampler = WindowSampler(clips, config, codec, mode_probs=parse_modes(args.modes),
                            speech_weights=speech_weights(clips, args.speech_weight))
    loader = DataLoader(WindowStream(sampler, args.batch, args.seed), batch_size=None, num_workers=0)
    strategy = "ddp" if args.devices > 1 else "auto"
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=strategy,
        max_steps=remaining,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SaveEvery(args.out, codec, args.save_every, init_meta)],
        gradient_clip_val=1.0,
        use_distributed_sampler=False,
    )
    trainer.fit(module, train_dataloaders=loader)
    return 0


if __name__ == "__main__":
    sys.exit(main())
