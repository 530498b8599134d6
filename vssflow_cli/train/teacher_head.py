"""The teacher's mel head: Kokoro's log-mel without its waveform generator.

``python -m vssflow_cli.train.teacher_head data CORPUS OUT`` reads every English training transcript of the corpus
(and pairs of them joined into longer lines) with the full Kokoro graph, keeping, beside the waveform, the tensors
its iSTFTNet generator starts from: the decoder's output (512 channels at 80 frames/s), the F0 curve and the
decoder style. ``python -m vssflow_cli.train.teacher_head fit OUT --export weights/teacher-head`` trains a small
convolutional head mapping those tensors to the codec's log-mel (and 10 ms frame level, for trimming) of the
waveform, and writes ``head.onnx`` and ``manifest.json``.

Why: the generator is ~90 % of Kokoro's time on 2 CPU cores (0.25 s of 2.6 s for a 4.9 s line) and a dub only
needs the reading's log-mel, so the runtime (:mod:`vssflow_cli.teacher`) stops the graph before it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("vssflow.teacher_head")

# --------------------------------------------------------------------------- data


def _texts(corpus: Path, pairs: int, seed: int = 0) -> list[str]:
    from vssflow_cli.train.dataset import read_index

    seen: dict[str, None] = {}
    for row in read_index(corpus):
        if row.get("kind") == "speech" and row.get("lang") == "en" and row.get("split") == "train" and row["text"]:
            seen.setdefault(row["text"].strip(), None)
    single = list(seen)
    rng = random.Random(seed)
    joined = []
    for _ in range(pairs):
        a, b = rng.sample(single, 2)
        joined.append(f"{a.rstrip('.!?')}, {b[0].lower()}{b[1:]}")
    return single + joined


def make_data(corpus: Path, out: Path, pairs: int = 300, limit: int | None = None) -> int:
    """Write ``OUT/data/<n>.npz`` (inputs at the codec's mel frames, target log-mel and frame dB); returns count."""
    from scipy.signal import resample_poly

    from vssflow_cli.audio import log_mel
    from vssflow_cli.config import AudioConfig
    from vssflow_cli.output import atomic_output
    from vssflow_cli.teacher import KokoroTeacher, head_inputs, kokoro_tap_session
    from vssflow_cli.trim import frame_db

    cfg = AudioConfig()
    texts = _texts(corpus, pairs)[:limit]
    teacher = KokoroTeacher()
    session = kokoro_tap_session(threads=2)
    (out / "data").mkdir(parents=True, exist_ok=True)
    t0, n = time.time(), 0
    for i, text in enumerate(texts):
        dst = out / "data" / f"{i:05d}.npz"
        if dst.exists():
            n += 1
            continue
        for ids in teacher.tokens(text):
            audio, feats, f0, style = session.run(
                None,
                {
                    "tokens": np.array([[0, *ids, 0]], np.int64),
                    "style": teacher.voices[teacher.voice][min(len(ids), 510) - 1].reshape(1, -1),
                    "speed": np.array([1.0], np.float32),
                },
            )
            wave = resample_poly(np.asarray(audio, np.float32).ravel(), 2, 3).astype(np.float32)
            mel = log_mel(wave, cfg)
            db = frame_db(wave, cfg.sample_rate)[: len(mel)]
            x = head_inputs(feats[0], f0[0, 0], style[0], len(mel))
            with atomic_output(dst) as tmp, open(tmp, "wb") as f:  # a killed run leaves no half file to resume on
                np.savez(f, x=x.astype(np.float16), mel=mel.astype(np.float32), db=db.astype(np.float32),
                         text=np.array(text))
            n += 1
            break  # one chunk per text (lines here are far below Kokoro's context)
        if i % 50 == 0:
            log.info("%d/%d readings, %.0f s", i, len(texts), time.time() - t0)
    return n


# --------------------------------------------------------------------------- model


def build_head(in_dim: int, width: int, blocks: int, kernel: int, n_mels: int):
    """Conv1d head: (B, in_dim, F) -> (B, n_mels + 1, F): log-mel and the frame's dB level, same frame rate."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv1d(width, width, kernel, padding=kernel // 2)
            self.b = nn.Conv1d(width, width, kernel, padding=kernel // 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.b(nn.functional.gelu(self.a(nn.functional.gelu(x))))

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Conv1d(in_dim, width, 1)
            self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])
            self.out = nn.Conv1d(width, n_mels + 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(nn.functional.gelu(self.blocks(self.inp(x))))

    return Head()


def _load(out: Path):
    files = sorted((out / "data").glob("*.npz"))
    items = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            items.append((z["x"].astype(np.float32), z["mel"], z["db"], str(z["text"])))
    return items


def fit(out: Path, steps: int = 3000, width: int = 192, blocks: int = 3, kernel: int = 5, seed: int = 0,
        export: Path | None = None, store: str = "fp16") -> dict:
    """Train the head on ``OUT/data`` (every 10th reading held out); returns the figures (and exports)."""
    import torch

    from vssflow_cli.config import AudioConfig
    from vssflow_cli.teacher import HEAD_DB_SCALE, HEAD_IN_DIM

    torch.manual_seed(seed)
    cfg = AudioConfig()
    items = _load(out)
    val = items[::10]
    train = [it for i, it in enumerate(items) if i % 10]
    head = build_head(HEAD_IN_DIM, width, blocks, kernel, cfg.n_mels)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(seed)
    crop = 200  # 2 s windows, batch 16

    def batch():
        xs, ys = [], []
        for j in rng.integers(0, len(train), 16):
            x, mel, db, _ = train[j]
            n = min(len(x), len(mel))
            s = int(rng.integers(0, max(1, n - crop)))
            e = min(n, s + crop)
            y = np.concatenate([mel[s:e], db[s:e, None] / HEAD_DB_SCALE], axis=1)
            pad = crop - (e - s)
            xs.append(np.pad(x[s:e], ((0, pad), (0, 0))))
            ys.append(np.pad(y, ((0, pad), (0, 0)), constant_values=np.nan))
        return torch.from_numpy(np.stack(xs)).transpose(1, 2), torch.from_numpy(np.stack(ys)).transpose(1, 2)

    def loss_of(pred, y):
        ok = ~torch.isnan(y)
        return (pred - torch.nan_to_num(y)).abs()[ok].mean()

    torch.set_num_threads(2)
    t0 = time.time()
    head.train()
    for step in range(steps):
        x, y = batch()
        loss = loss_of(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            log.info("step %d loss %.4f (%.0f s)", step, loss.item(), time.time() - t0)
    head.eval()
    mel_l1, db_l1 = [], []
    with torch.no_grad():
        for x, mel, db, _ in val:
            n = min(len(x), len(mel))
            p = head(torch.from_numpy(x[:n].T[None]))[0].T.numpy()
            mel_l1.append(np.abs(p[:, :-1] - mel[:n]).mean())
            db_l1.append(np.abs(p[:, -1] * HEAD_DB_SCALE - db[:n]).mean())
    figures = {
        "train_readings": len(train), "val_readings": len(val), "steps": steps, "fit_s": round(time.time() - t0),
        "val_logmel_l1": round(float(np.mean(mel_l1)), 4), "val_db_l1": round(float(np.mean(db_l1)), 3),
        "width": width, "blocks": blocks, "kernel": kernel, "seed": seed,
    }
    log.info("figures %s", figures)
    if export is not None:
        export_head(head, Path(export), figures, store)
        from safetensors.torch import save_file

        save_file(head.state_dict(), str(Path(out) / "head.safetensors"))  # to re-export with another --store
    return figures


STORES = ("fp16", "int8")


def export_head(head, dst: Path, figures: dict, store: str = "fp16") -> None:
    """``head.onnx`` (input ``x`` (1, F, in_dim) -> ``y`` (1, F, n_mels + 1)) and its manifest in ``dst``."""
    import torch

    from vssflow_cli.bundle import file_sha256
    from vssflow_cli.config import AudioConfig
    from vssflow_cli.export import store_weights
    from vssflow_cli.output import atomic_output
    from vssflow_cli.teacher import (
        DEFAULT_VOICE,
        HEAD_DB_SCALE,
        HEAD_FORMAT,
        HEAD_IN_DIM,
        KOKORO_FEATURES,
        KOKORO_SHA256,
    )

    class Frames(torch.nn.Module):  # frames-last in, frames-first out: what the runtime holds
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.transpose(1, 2)).transpose(1, 2)

    dst.mkdir(parents=True, exist_ok=True)
    onnx_path = dst / "head.onnx"
    with atomic_output(onnx_path) as tmp:
        torch.onnx.export(
            Frames().eval(), (torch.zeros(1, 64, HEAD_IN_DIM),), str(tmp), input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {1: "frames"}, "y": {1: "frames"}}, opset_version=17, dynamo=False,
        )
        store_weights(tmp, store)
    cfg = AudioConfig()
    manifest = {
        "format": HEAD_FORMAT,
        "head": "head.onnx",
        "head_sha256": file_sha256(onnx_path),
        "kokoro_sha256": KOKORO_SHA256,
        "kokoro_tensors": list(KOKORO_FEATURES),
        "voice": DEFAULT_VOICE,
        "weights_stored_as": store,
        "input": f"{HEAD_IN_DIM} = decoder output 512 + log1p(F0) + decoder style 128, at the codec's mel frames",
        "output": f"log-mel ({cfg.n_mels} bins, {cfg.sample_rate} Hz, hop {cfg.hop}) + frame dBFS / {HEAD_DB_SCALE}",
        "audio": {"sample_rate": cfg.sample_rate, "n_fft": cfg.n_fft, "hop": cfg.hop, "n_mels": cfg.n_mels},
        "licence": "Apache-2.0 (derived from Kokoro-82M v1.0, hexgrad; trained on its own readings)",
        "training": {
            "command": "python -m vssflow_cli.train.teacher_head data CORPUS OUT --pairs 400 && "
                       f"python -m vssflow_cli.train.teacher_head fit OUT --steps {figures['steps']} "
                       f"--width {figures['width']} --blocks {figures['blocks']} --store {store} "
                       "--export weights/teacher-head",
            **figures,
        },
    }
    with atomic_output(dst / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def reexport(src: Path, dst: Path, store: str) -> None:
    """Export the head in ``src`` (a folder written by ``fit --export``: its manifest and ``head.onnx``, whose
    weights are read back) again with weights stored as ``store``."""
    import onnx
    import torch
    from onnx import numpy_helper

    from vssflow_cli.config import AudioConfig
    from vssflow_cli.teacher import HEAD_IN_DIM

    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    fig = manifest["training"]
    model = onnx.load(str(src / manifest["head"]))
    if manifest.get("weights_stored_as", "fp16") != "fp16":
        raise ValueError(f"{src}: re-export starts from a float16-stored head")
    sd = {i.name.removesuffix("__fp16").removeprefix("head."): torch.from_numpy(
          numpy_helper.to_array(i).astype(np.float32)) for i in model.graph.initializer}
    head = build_head(HEAD_IN_DIM, fig["width"], fig["blocks"], fig["kernel"], AudioConfig().n_mels)
    head.load_state_dict(sd)
    figures = {k: v for k, v in fig.items() if k != "command"}
    export_head(head.eval(), dst, figures, store)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vssflow_cli.train.teacher_head", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("corpus", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--pairs", type=int, default=300)
    d.add_argument("--limit", type=int)
    f = sub.add_parser("fit")
    f.add_argument("out", type=Path)
    f.add_argument("--steps", type=int, default=3000)
    f.add_argument("--width", type=int, default=192)
    f.add_argument("--blocks", type=int, default=3)
    f.add_argument("--kernel", type=int, default=5)
    f.add_argument("--export", type=Path)
    f.add_argument("--store", choices=STORES, default="fp16")
    r = sub.add_parser("reexport")
    r.add_argument("src", type=Path)
    r.add_argument("dst", type=Path)
    r.add_argument("--store", choices=STORES, default="int8")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.cmd == "data":
        log.info("%d readings", make_data(args.corpus, args.out, args.pairs, args.limit))
    elif args.cmd == "reexport":
        reexport(args.src, args.dst, args.store)
    else:
        figures = fit(args.out, args.steps, args.width, args.blocks, args.kernel, export=args.export, store=args.store)
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
