"""Which kind of sound is this? A category judge for foley ``--prompt`` following.

The judge is a linear probe (multinomial logistic regression) over the pretrained sound-effects embedding
shipped in PyPI ``aisfx`` 0.1.2 (Ma & Lerch, "Representation Learning for the Automatic Indexing of Sound Effects
Libraries", ISMIR 2022; CC BY 4.0): the ``X-Sequential-CE`` CNN, 44.1 kHz log-mel input (96 bands, 2048/1024
frames), one 512-d embedding per block of 100 frames (~2.3 s, hop 1.16 s). Only the embedding CNN is used; the
checkpoint (a torch pickle) is sha256-checked, then read with ``torch.load(weights_only=True)``.

Features follow aisfx's Essentia recipe in numpy (Hann frames, power spectrum, HTK mel bands of unit sum,
``log10(1e4 x + 1)``, its cross-dataset scale 1 / 9.4578) after resampling 16 kHz -> 44.1 kHz and peak
normalisation (as aisfx's librosa path does), so the judge ignores level. A clip's embedding is the mean over its
blocks; a clip shorter than a block is zero-padded (silence in this log scale).

Labels (:func:`judge_label`) are coarse classes of the corpus categories (``footsteps/tile`` -> ``footsteps``)
through an explicit table; speech, silence and categories outside the table get no label. The probe is trained on
the corpus's ``train`` split only (real clips plus the same clips after a log-mel -> Griffin-Lim round trip, the
model's own output path, so the judge also reads vocoded audio) and shipped in ``weights/judges/sound-category/``
(``probe.safetensors`` + ``manifest.json``).

    python -m vssflow_cli.train.sound_judge fit --corpus /work/corpus     # writes the probe
    python -m vssflow_cli.train.sound_judge score --corpus /work/corpus   # held-out accuracy, real and vocoded

Needs torch (the ``train`` extra) and ``aisfx`` installed with ``pip install --no-deps aisfx==0.1.2`` (its pinned
requirements, numpy 1.23 and librosa 0.9.2, are not needed: nothing of aisfx beyond its model class is imported).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from vssflow_cli.bundle import file_sha256

SAMPLE_RATE = 16000  # what the judge is given (the corpus and the model's output rate)
AISFX_RATE = 44100
N_FFT, HOP, N_MELS = 2048, 1024, 96
BLOCK, BLOCK_HOP = 100, 50  # embedding blocks (frames) and their hop: aisfx's defaults (emb_hop_size 0.5)
SPEC_SCALE = 9.457798957824707  # aisfx's 'original' min-max normalisation (min 0)
EMBED_DIM = 512

AISFX_VERSION = "0.1.2"
AISFX_WEIGHTS = "aisfx/models/checkpoint.pth"  # inside site-packages
AISFX_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"

JUDGE_DIR = Path(__file__).resolve().parents[2] / "weights" / "judges" / "sound-category"
PROBE_FILE, MANIFEST_FILE = "probe.safetensors", "manifest.json"
DEFAULT_L2 = 0.1  # L2 on the probe weights (standardised features); grouped CV was flat over 0.001-1
MIN_CLIPS = 12  # classes with fewer training clips are left out

# Corpus category prefix (the part before "/") -> judge class. Small groups are merged into a neighbour so every
# class has enough training clips; Wesnoth's "battle/*" (one prefix for everything heard in a fight) is split below.
PREFIX_CLASSES: dict[str, str] = {
    "footsteps": "footsteps",  # UFO:AI steps on many surfaces
    "animals": "animal",  # Tux Paint stamp animals (calls, cries)
    "ambience": "ambience",  # UFO:AI / Wesnoth ambient loops (wind, fire, machinery hum, alien base)
    "city": "city",  # LinCity-NG building loops (industry, traffic, crowds, water)
    "weapon": "weapon",  # UFO:AI guns, reloads, explosions
    "sword": "weapon",
    "impact": "weapon",  # projectile impacts
    "creature": "creature",  # UFO:AI alien cries
    "voice": "voice",  # UFO:AI soldiers and civilians: hurt, death, scream
    "ui": "ui",  # UFO:AI interface beeps and misc cues
    "door": "objects",
    "break": "objects",  # glass, metal, wood breaking
    "household": "objects",  # Tux Paint household items (kettle, saw, toilet, scissors)
    "horn": "music",  # Wesnoth horn signals
    "hobbies": "music",  # Tux Paint instruments
    "keyboard": "keyboard",  # bucklespring typing
    "vehicle": "vehicle",
    "vehicles": "vehicle",
    "flyby": "vehicle",
}
# whole categories that leave their prefix's class (None: not judged)
CATEGORY_CLASSES: dict[str, str | None] = {
    "seasonal/blackcat": "animal",
    "seasonal/bat-left": "animal",
    "seasonal/spider": None,
    "hobbies/camera-mm": "objects",
    "space/apollo-lander": "vehicle",
    "naturalforces/lightningbolt": None,
}
EXCLUDED_PREFIXES = ("silence", "speech")
# Wesnoth battle sounds: spells, vocal cries (by who cries) and everything else (weapons, blows, impacts)
BATTLE_MAGIC = frozenset("magic magicmissile lightning fire flame entangle petrified poison ink water-blast".split())
BATTLE_CRY_WORDS = frozenset("hit die growl shriek laugh attack wail groan hiss ugg charge".split())
BATTLE_HUMANS = frozenset("human dwarf elf".split())
BATTLE_SKIP = frozenset("open-chest horse-canter horse-elf-canter bat-flapping rumble cave-in potion".split())


def _battle_class(name: str) -> str | None:
    if name in BATTLE_SKIP:
        return None
    words = name.split("-")
    if words[0] in BATTLE_MAGIC or name in BATTLE_MAGIC:
        return "magic"
    if words[0] == "squishy" or words[0] == "mud":
        return "weapon"
    if any(w in BATTLE_CRY_WORDS for w in words):
        return "voice" if words[0] in BATTLE_HUMANS else "creature"
    return "weapon"


def judge_label(category: str) -> str | None:
    """The judge's class of a corpus sound category (``"footsteps/tile"`` -> ``"footsteps"``), or None (speech,
    silence, categories the table leaves out)."""
    category = (category or "").strip().lower()
    if not category:
        return None
    prefix, _, rest = category.partition("/")
    if prefix in EXCLUDED_PREFIXES:
        return None
    if category in CATEGORY_CLASSES:
        return CATEGORY_CLASSES[category]
    if prefix == "battle":
        return _battle_class(rest)
    return PREFIX_CLASSES.get(prefix)


# --------------------------------------------------------------------------- features


def aisfx_weights_path() -> Path:
    """Where the installed aisfx package keeps its checkpoint (without importing aisfx's __init__)."""
    import importlib.util

    spec = importlib.util.find_spec("aisfx")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the sound judge needs the aisfx embedding: pip install --no-deps aisfx==" + AISFX_VERSION)
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "checkpoint.pth"


def _mel_filters() -> np.ndarray:
    """HTK-scale triangular filters, each summing to 1 ('unit_sum'): (96, 1025) float32, 0 Hz .. 22.05 kHz."""
    freqs = np.linspace(0.0, AISFX_RATE / 2, N_FFT // 2 + 1)
    mel = np.linspace(0.0, 2595.0 * np.log10(1.0 + (AISFX_RATE / 2) / 700.0), N_MELS + 2)
    edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    fb = np.zeros((N_MELS, len(freqs)))
    for i in range(N_MELS):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        fb[i] = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    fb /= np.maximum(fb.sum(axis=1, keepdims=True), 1e-10)
    return fb.astype(np.float32)


_FILTERS: np.ndarray | None = None


def aisfx_spectrogram(wave16k: np.ndarray) -> np.ndarray:
    """aisfx's normalised log-mel of a 16 kHz wave: (frames, 96) float32, frames = 1 + N44 // 1024."""
    from scipy.signal import resample_poly

    global _FILTERS
    if _FILTERS is None:
        _FILTERS = _mel_filters()
    x = np.asarray(wave16k, dtype=np.float64).reshape(-1)
    x = np.nan_to_num(x)
    x = resample_poly(x, AISFX_RATE // 100, SAMPLE_RATE // 100) if len(x) else x
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    x = (x / peak if peak > 1e-6 else x).astype(np.float32)
    pad = N_FFT // 2
    x = np.pad(x, (pad, pad + N_FFT))
    n_frames = 1 + (len(x) - 2 * pad - N_FFT) // HOP
    n_frames = max(n_frames, 1)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:n_frames]
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * win, axis=-1)).astype(np.float32) ** 2
    return (np.log10(1e4 * (power @ _FILTERS.T) + 1.0) / SPEC_SCALE).astype(np.float32)


def blocks(spec: np.ndarray) -> np.ndarray:
    """(frames, 96) -> (n, 100, 96) blocks every 50 frames; a partial last block is dropped unless it is the only
    one (then it is zero-padded), as aisfx does."""
    n = len(spec)
    if n <= BLOCK:
        out = np.zeros((1, BLOCK, spec.shape[1]), np.float32)
        out[0, :n] = spec
        return out
    starts = range(0, n - BLOCK + 1, BLOCK_HOP)
    return np.stack([spec[s : s + BLOCK] for s in starts]).astype(np.float32)


def load_embedding_net(weights: Path | None = None, expected_sha256: str = AISFX_SHA256):
    """aisfx's embedding CNN (eval mode, CPU) after checking the checkpoint's sha256."""
    import torch
    from aisfx.models.cnn2d import EmbeddingNet

    path = Path(weights) if weights is not None else aisfx_weights_path()
    if not path.is_file():
        raise RuntimeError(f"aisfx weights not found at {path}: pip install --no-deps aisfx=={AISFX_VERSION}")
    got = file_sha256(path)
    if got != expected_sha256:
        raise RuntimeError(
            f"aisfx weights {path} have sha256 {got}, expected {expected_sha256} (aisfx {AISFX_VERSION}): "
            "refusing to load them"
        )
    # the checkpoint is (state_dict, {dataset: (np.int64 index, classes)}): allow exactly the numpy scalar and
    # dtype globals that dict needs, nothing else (weights_only=True keeps every other global out)
    core = getattr(np, "_core", None) or np.core
    allowed = [(core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType]
    with torch.serialization.safe_globals(allowed):
        state, _datasets = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "embedding_net."
    net = EmbeddingNet("max", 3, 1, 64)
    net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    net.eval()
    return net


class SoundJudge:
    """The shipped probe over the aisfx embedding: ``embed(wave16k)`` (512,), ``predict(wave16k)`` (label, probs)."""

    def __init__(self, judge_dir: Path | str | None = None, aisfx_weights: Path | None = None) -> None:
        from safetensors.numpy import load_file

        judge_dir = Path(judge_dir) if judge_dir is not None else find_judge_dir()
        self.manifest = json.loads((judge_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        probe_path = judge_dir / PROBE_FILE
        got = file_sha256(probe_path)
        if got != self.manifest["probe_sha256"]:
            raise RuntimeError(f"{probe_path} has sha256 {got}, the manifest says {self.manifest['probe_sha256']}")
        p = load_file(str(probe_path))
        self.mean, self.std = p["mean"], p["std"]
        self.weight, self.bias = p["weight"], p["bias"]  # (C, 512), (C,)
        self.labels: list[str] = list(self.manifest["labels"])
        if self.manifest["embedding"]["sha256"] != AISFX_SHA256:
            raise RuntimeError(f"{judge_dir} was fitted on another embedding than aisfx {AISFX_VERSION}'s")
        self.net = load_embedding_net(aisfx_weights)

    def embed_blocks(self, wave16k: np.ndarray) -> np.ndarray:
        """(n_blocks, 512) embeddings of a 16 kHz wave."""
        import torch

        b = blocks(aisfx_spectrogram(wave16k))
        with torch.inference_mode():
            return self.net(torch.from_numpy(b)).numpy().astype(np.float32)

    def embed(self, wave16k: np.ndarray) -> np.ndarray:
        """(512,) clip embedding: the mean of its block embeddings."""
        return self.embed_blocks(wave16k).mean(axis=0)

    def probs_of_embedding(self, emb: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(emb) - self.mean) / self.std
        logits = z @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, wave16k: np.ndarray) -> tuple[str, dict[str, float]]:
        """Most probable class and every class's probability."""
        probs = self.probs_of_embedding(self.embed(wave16k))[0]
        return self.labels[int(np.argmax(probs))], {lab: float(p) for lab, p in zip(self.labels, probs)}


# --------------------------------------------------------------------------- corpus, fit, score


def source_key(clip_id: str) -> str:
    """Clips cut from one recording share a source (``ufo-footsteps-tile1-c0`` -> ``ufo-footsteps-tile1``)."""
    head, sep, tail = clip_id.rpartition("-c")
    return head if sep and tail.isdigit() else clip_id


def corpus_rows(corpus: Path, split: str) -> list[dict]:
    """Index rows of built sound clips of ``split`` that have a judge label, with the label under ``"label"``."""
    from vssflow_cli.train.dataset import read_index

    out = []
    for row in read_index(Path(corpus)):
        if row.get("kind") != "sound" or row.get("split") != split:
            continue
        label = judge_label(row.get("category", ""))
        if label is None or not (Path(corpus) / "clips" / f"{row['id']}.safetensors").exists():
            continue
        out.append({**row, "label": label})
    return out


def vocoded(wave16k: np.ndarray) -> np.ndarray:
    """The model's output path applied to real audio: log-mel (the model's own features) -> Griffin-Lim."""
    from vssflow_cli.audio import log_mel, vocode

    return vocode(log_mel(wave16k))[: len(wave16k)].astype(np.float32)


def codec_round_trip(checkpoint: Path):
    """wave -> log-mel -> a model's latent codec (``codec.*`` tensors of its checkpoint) and back -> Griffin-Lim."""
    from safetensors.numpy import load_file

    from vssflow_cli.audio import LatentCodec, log_mel, vocode

    codec = LatentCodec.from_tensors({k: v for k, v in load_file(str(checkpoint)).items() if k.startswith("codec.")})
    return lambda wave: vocode(codec.decode(codec.encode(log_mel(wave)))).astype(np.float32)


def _clip_wave(corpus: Path, clip_id: str) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(Path(corpus) / "clips" / f"{clip_id}.safetensors"))["wave"].astype(np.float32)


class _Embedder:
    """Clip embeddings (real and vocoded), cached per clip under ``cache`` keyed by the wave's sha1."""

    def __init__(self, corpus: Path, cache: Path | None, net=None) -> None:
        self.corpus, self.cache = Path(corpus), cache
        self.net = net if net is not None else load_embedding_net()
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)

    def _embed(self, wave: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.net(torch.from_numpy(blocks(aisfx_spectrogram(wave)))).numpy().mean(axis=0)

    def __call__(self, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
        wave = _clip_wave(self.corpus, clip_id)
        digest = hashlib.sha1(wave.tobytes()).hexdigest()
        f = self.cache / f"{clip_id}.npz" if self.cache is not None else None
        if f is not None and f.exists():
            z = np.load(f)
            if str(z["wave_sha1"]) == digest:
                return z["real"], z["voc"]
        real, voc = self._embed(wave), self._embed(vocoded(wave))
        if f is not None:
            np.savez(f, real=real, voc=voc, wave_sha1=np.array(digest))
        return real, voc


def embed_rows(rows: list[dict], embedder: _Embedder, log=print) -> tuple[np.ndarray, np.ndarray]:
    real, voc = [], []
    for i, row in enumerate(rows):
        r, v = embedder(row["id"])
        real.append(r)
        voc.append(v)
        if (i + 1) % 100 == 0:
            log(f"  embedded {i + 1}/{len(rows)}")
    return np.stack(real).astype(np.float32), np.stack(voc).astype(np.float32)


def fit_probe(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, iters: int = 300) -> dict[str, np.ndarray]:
    """Multinomial logistic regression on standardised features, classes weighted to equal total weight.

    Full-batch L-BFGS in float64 from zeros: deterministic for given inputs.
    """
    import torch

    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-3
    z = torch.from_numpy(((x - mean) / std).astype(np.float64))
    t = torch.from_numpy(y.astype(np.int64))
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    cw = torch.from_numpy(np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0))
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=iters,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure():
        opt.zero_grad()
        nll = torch.nn.functional.cross_entropy(z @ w.T + b, t, weight=cw)
        loss = nll + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {
        "weight": w.detach().numpy().astype(np.float32),
        "bias": b.detach().numpy().astype(np.float32),
        "mean": mean.astype(np.float32),
        "std": std.astype(np.float32),
    }


def probe_predict(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.argmax(((x - p["mean"]) / p["std"]) @ p["weight"].T + p["bias"], axis=1)


def grouped_cv(x_real, x_voc, y, groups, n_classes, l2, folds=5, mix=True):
    """Accuracy (real, vocoded) of probes fitted on 4/5 of the training sources, tested on the other fifth."""
    keys = sorted(set(groups))
    fold_of = {k: int(hashlib.sha1(k.encode()).hexdigest(), 16) % folds for k in keys}
    f = np.array([fold_of[g] for g in groups])
    hit_r, hit_v = np.zeros(len(y), bool), np.zeros(len(y), bool)
    for k in range(folds):
        tr, te = f != k, f == k
        xt, yt = x_real[tr], y[tr]
        if mix:
            xt, yt = np.concatenate([xt, x_voc[tr]]), np.concatenate([yt, yt])
        p = fit_probe(xt, yt, n_classes, l2)
        hit_r[te] = probe_predict(p, x_real[te]) == y[te]
        hit_v[te] = probe_predict(p, x_voc[te]) == y[te]
    return float(hit_r.mean()), float(hit_v.mean())


def find_judge_dir() -> Path:
    """The shipped probe: package data when installed, else the repository's ``weights/``."""
    pkg = Path(__file__).resolve().parents[1]
    for d in (pkg / "weights" / "judges" / "sound-category", JUDGE_DIR):
        if (d / MANIFEST_FILE).exists():
            return d
    return JUDGE_DIR


def fit_main(args) -> int:
    from safetensors.numpy import save_file

    corpus = Path(args.corpus)
    rows = corpus_rows(corpus, "train")
    counts = Counter(r["label"] for r in rows)
    labels = sorted(lab for lab, n in counts.items() if n >= args.min_clips)
    rows = [r for r in rows if r["label"] in labels]
    test_counts = Counter(r["label"] for r in corpus_rows(corpus, "test"))
    print(f"{len(rows)} training clips, {len(labels)} classes (train / test clips):")
    for lab in labels:
        print(f"  {lab:10s} {counts[lab]:5d} {test_counts.get(lab, 0):5d}")
    dropped = {lab: n for lab, n in counts.items() if lab not in labels}
    if dropped:
        print(f"  left out (< {args.min_clips} training clips): {dropped}")
    embedder = _Embedder(corpus, Path(args.cache) if args.cache else None)
    x_real, x_voc = embed_rows(rows, embedder)
    y = np.array([labels.index(r["label"]) for r in rows])
    groups = [source_key(r["id"]) for r in rows]
    cv = {}
    if args.cv:
        for mix in (False, True):
            acc_r, acc_v = grouped_cv(x_real, x_voc, y, groups, len(labels), args.l2, mix=mix)
            name = "real+vocoded" if mix else "real"
            cv[name] = {"real": round(acc_r, 4), "vocoded": round(acc_v, 4)}
            print(f"grouped 5-fold CV on train, probe fitted on {name}: real {acc_r:.3f}  vocoded {acc_v:.3f}")
    x = np.concatenate([x_real, x_voc]) if args.mix else x_real
    probe = fit_probe(x, np.concatenate([y, y]) if args.mix else y, len(labels), args.l2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(probe, str(out / PROBE_FILE))
    index_sha = hashlib.sha256(
        "\n".join(sorted(f"{r['id']}\t{r['category']}\t{r['split']}" for r in rows)).encode()
    ).hexdigest()
    manifest = {
        "format": "vssflow-sound-judge/1",
        "labels": labels,
        "probe": PROBE_FILE,
        "probe_sha256": file_sha256(out / PROBE_FILE),
        "embedding": {
            "package": f"aisfx=={AISFX_VERSION}",
            "file": AISFX_WEIGHTS,
            "sha256": AISFX_SHA256,
            "licence": "CC-BY-4.0 (c) 2022 A.B. Ma and A. Lerch",
            "dim": EMBED_DIM,
            "input": f"16 kHz -> {AISFX_RATE} Hz, peak-normalised, {N_MELS} HTK mels, {N_FFT}/{HOP}, "
            f"blocks {BLOCK}/{BLOCK_HOP} frames, mean over blocks",
        },
        "training": {
            "command": "python -m vssflow_cli.train.sound_judge fit --corpus CORPUS"
            + ("" if args.mix else " --no-mix")
            + (f" --l2 {args.l2}" if args.l2 != DEFAULT_L2 else "")
            + (f" --min-clips {args.min_clips}" if args.min_clips != MIN_CLIPS else ""),
            "split": "train",
            "clips": len(rows),
            "sources": len(set(groups)),
            "clips_per_class": {lab: counts[lab] for lab in labels},
            "features": "real + log-mel/Griffin-Lim round trip of every clip" if args.mix else "real clips",
            "l2": args.l2,
            "classifier": "multinomial logistic regression, standardised features, class-balanced, L-BFGS",
            "corpus_index_sha256": index_sha,
            "grouped_cv": cv,
        },
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / PROBE_FILE} ({(out / PROBE_FILE).stat().st_size} bytes) and {out / MANIFEST_FILE}")
    return 0


def _report(name: str, y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    per = {}
    for i, lab in enumerate(labels):
        m = y == i
        if m.any():
            per[lab] = (int((pred[m] == i).sum()), int(m.sum()))
    acc = float((pred == y).mean())
    bal = float(np.mean([h / n for h, n in per.values()]))
    print(f"{name}: accuracy {acc:.3f} ({int((pred == y).sum())}/{len(y)}), balanced (mean per class) {bal:.3f}")
    print("   " + "  ".join(f"{lab} {h}/{n}" for lab, (h, n) in per.items()))
    return {"accuracy": round(acc, 4), "balanced_accuracy": round(bal, 4), "per_class": per}


def score_main(args) -> int:
    corpus = Path(args.corpus)
    judge = SoundJudge(args.judge or find_judge_dir())
    labels = judge.labels
    rows = [r for r in corpus_rows(corpus, "test") if r["label"] in labels]
    other = Counter(r["label"] for r in corpus_rows(corpus, "test") if r["label"] not in labels)
    if not rows:
        print("no held-out sound clips with a judged label in", corpus)
        return 1
    embedder = _Embedder(corpus, Path(args.cache) if args.cache else None, judge.net)
    x_real, x_voc = embed_rows(rows, embedder)
    y = np.array([labels.index(r["label"]) for r in rows])
    probe = {"weight": judge.weight, "bias": judge.bias, "mean": judge.mean, "std": judge.std}
    n_cls = len(labels)
    present = sorted({r["label"] for r in rows})
    train_counts = judge.manifest["training"]["clips_per_class"]
    majority = max(train_counts, key=train_counts.get)
    test_counts = Counter(r["label"] for r in rows)
    print(f"held-out real clips: {len(rows)} over {len(present)} of the judge's {n_cls} classes ({dict(test_counts)})")
    if other:
        print(f"  (held-out clips of classes the judge does not have, not scored: {dict(other)})")
    print(
        f"chance 1/{n_cls} = {1 / n_cls:.3f} (1/{len(present)} = {1 / len(present):.3f} over the classes present); "
        f"majority class of train '{majority}' on held-out = {test_counts.get(majority, 0) / len(rows):.3f}; "
        f"largest held-out class = {max(test_counts.values()) / len(rows):.3f}"
    )
    result = {
        "clips": len(rows),
        "chance": round(1 / n_cls, 4),
        "majority_rate": round(test_counts.get(majority, 0) / len(rows), 4),
        "real": _report("real held-out", y, probe_predict(probe, x_real), labels),
        "vocoded": _report("vocoded held-out (log-mel -> Griffin-Lim)", y, probe_predict(probe, x_voc), labels),
    }
    if args.codec:
        codec = codec_round_trip(Path(args.codec))
        x_codec = np.stack([judge.embed(codec(_clip_wave(corpus, r["id"]))) for r in rows])
        result["codec"] = _report(f"codec round trip ({args.codec} latent -> Griffin-Lim)", y,
                                  probe_predict(probe, x_codec), labels)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vssflow_cli.train.sound_judge", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit the probe on the corpus's train split and write it")
    f.add_argument("--corpus", required=True)
    f.add_argument("--out", default=str(JUDGE_DIR))
    f.add_argument("--cache", default=None, help="folder for per-clip embeddings (reused when the wave is unchanged)")
    f.add_argument("--l2", type=float, default=DEFAULT_L2)
    f.add_argument("--min-clips", type=int, default=MIN_CLIPS, help="classes with fewer training clips are left out")
    f.add_argument("--no-mix", dest="mix", action="store_false", help="train on real clips only")
    f.add_argument("--no-cv", dest="cv", action="store_false", help="skip the grouped cross-validation report")
    s = sub.add_parser("score", help="accuracy of the shipped probe on held-out real clips, real and vocoded")
    s.add_argument("--corpus", required=True)
    s.add_argument("--judge", default=None, help="probe folder (default: the shipped one)")
    s.add_argument("--cache", default=None)
    s.add_argument("--json", default=None, help="also write the numbers here")
    s.add_argument("--codec", default=None, help="also score after a model's latent codec (its checkpoint file)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(int(__import__("os").environ.get("VSSFLOW_JUDGE_THREADS", "1")))
    return fit_main(args) if args.cmd == "fit" else score_main(args)


if __name__ == "__main__":
    sys.exit(main())
