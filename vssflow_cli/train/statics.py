"""Silent clips of still pictures: ``python -m vssflow_cli.train.statics CORPUS [--count 240]``.

Foley's first duty is silence when nothing happens. These clips teach it: a still picture (black, a flat grey, a
real photo, a Tux Paint stamp photo on a texture), held for 2-5 s with what a real still camera adds (sensor noise,
a slow brightness flicker, now and then a tiny sub-pixel drift), and a silent sound track. Features are computed
exactly as for every other clip (``VisualFeatureStream`` on 64x64 frames), so "static" is told apart from "event" by
the motion features the model already has.

Writes ``CORPUS/clips/static-NNNN.safetensors`` and ``CORPUS/index-statics.jsonl`` (read beside ``index.jsonl`` by
:func:`vssflow_cli.train.dataset.read_index`); the split is by clip id hash as for the rest (1 in 20 held out), and
held-out clips also get ``heldout/static-NNNN.mp4`` for the silence check of the evaluation.

Pictures: scikit-image's bundled samples (``astronaut``: NASA, public domain; ``coffee``, ``chelsea``, ``rocket``,
``gravel``, ``grass``, ``brick``: CC0 / public domain per skimage's data README) and the
Tux Paint stamps already unpacked by the corpus build (GPL-2+ / CC; see the corpus LICENSES.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

FPS = 25
SR = 16000
SIZE = 128
SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "gravel", "grass", "brick")


def _split(clip_id: str) -> str:
    return "test" if int(hashlib.sha1(clip_id.encode()).hexdigest(), 16) % 20 == 0 else "train"


def _pictures(corpus: Path, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 (SIZE, SIZE, 3)) pictures to hold still."""
    from skimage import data
    from skimage.transform import resize

    pics = [("black", np.zeros((SIZE, SIZE, 3), np.uint8))]
    for g in (40, 90, 128, 200):
        pics.append((f"grey{g}", np.full((SIZE, SIZE, 3), g, np.uint8)))
    for name in SKIMAGE:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        pics.append((name, (resize(img[..., :3], (SIZE, SIZE), anti_aliasing=True) * 255).astype(np.uint8)))
    stamps = sorted((Path(corpus) / "unpacked" / "tuxpaint-stamps-default").rglob("*.png"))
    for p in [stamps[i] for i in rng.permutation(len(stamps))[:60]] if stamps else []:
        from vssflow_cli.train.render import category_texture, load_sprite

        sprite = load_sprite(p, SIZE // 2)  # (s + 4, s + 4, 4) float in [0, 1]
        bg = category_texture(p.parent.name, SIZE).copy()
        s = len(sprite)
        y0 = x0 = (SIZE - s) // 2
        a = sprite[..., 3:4]
        bg[y0 : y0 + s, x0 : x0 + s] = a * sprite[..., :3] + (1 - a) * bg[y0 : y0 + s, x0 : x0 + s]
        pics.append((f"stamp:{p.stem}", (bg * 255).clip(0, 255).astype(np.uint8)))
    return pics


def still_frames(picture: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` frames of a still camera on ``picture``: sensor noise, slow flicker, rare sub-pixel drift."""
    from vssflow_cli.vision import sample_bilinear

    base = picture.astype(np.float32) / 255.0
    noise = rng.uniform(0.0, 0.012)
    phase = 2 * np.pi * rng.uniform(0.1, 0.5) * np.arange(n) / FPS + rng.uniform(0, 6)
    flicker = rng.uniform(0.0, 0.03) * np.sin(phase)
    drift = rng.random() < 0.3
    frames = np.empty((n, *picture.shape), np.uint8)
    ys, xs = np.mgrid[0 : picture.shape[0], 0 : picture.shape[1]].astype(np.float32)
    for k in range(n):
        img = base
        if drift:
            d = 0.6 * k / max(1, n - 1)
            img = sample_bilinear(base, xs + d * 0.5, ys + d)
        img = img * (1 + flicker[k]) + rng.normal(0, noise, img.shape).astype(np.float32)
        frames[k] = (img.clip(0, 1) * 255).astype(np.uint8)
    return frames


def build(corpus: Path, count: int = 240, seed: int = 0) -> dict:
    """Write ``count`` static clips; returns a summary. Already written clips are kept."""
    from safetensors.numpy import save_file

    from vssflow_cli.train.corpus import write_mp4
    from vssflow_cli.vision import VisualFeatureStream, resize_frames

    corpus = Path(corpus)
    rng = np.random.default_rng(seed)
    pics = _pictures(corpus, rng)
    rows = []
    for i in range(count):
        name, pic = pics[i % len(pics)]
        clip_id = f"static-{i:04d}"
        r = np.random.default_rng([seed, i])
        n = int(r.integers(2 * FPS, 5 * FPS + 1))
        split = _split(clip_id)
        row = {"id": clip_id, "kind": "sound", "duration": n / FPS, "frames": n, "split": split, "lang": "",
               "category": "silence/still", "text": "", "caption": f"a still picture ({name}), nothing moves",
               "source_package": "skimage/tuxpaint-stamps-default"}
        rows.append(row)
        path = corpus / "clips" / f"{clip_id}.safetensors"
        if path.exists():
            continue
        frames = still_frames(pic, n, r)
        video, sync = VisualFeatureStream().push(resize_frames(frames, 64))
        wave = np.zeros(n * (SR // FPS), np.float32)
        tensors = {"wave": wave, "video": video.astype(np.float32), "sync": sync.astype(np.float32),
                   "lip": np.zeros((n, 8), np.float32), "phonemes": np.zeros(n, np.int64),
                   "onsets": np.zeros(0, np.float32), "apertures": np.zeros(n, np.float32)}
        meta = {"kind": "sound", "category": "silence/still", "split": split, "picture": name,
                "voiced_start": "0", "voiced_end": "0", "text": "", "lang": ""}
        if split == "test":
            write_mp4(corpus / "heldout" / f"{clip_id}.mp4", frames, wave)
            (corpus / "heldout" / f"{clip_id}.json").write_text(json.dumps(
                {"id": clip_id, "kind": "sound", "category": "silence/still", "onsets": [], "duration": n / FPS,
                 "fps": FPS, "sample_rate": SR, "lang": "", "text": "", "caption": row["caption"], "voiced": [0, 0],
                 "apertures": []}) + "\n")
        tmp = path.with_name(f".{path.name}.part")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
    index = corpus / "index-statics.jsonl"
    tmp = index.with_name(".index-statics.jsonl.part")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(index)
    return {"clips": len(rows), "test": sum(r["split"] == "test" for r in rows), "pictures": len(pics)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vssflow_cli.train.statics", description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--count", type=int, default=240)
    a = ap.parse_args(argv)
    print(json.dumps(build(a.corpus, a.count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
