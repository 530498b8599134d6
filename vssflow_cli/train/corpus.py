"""Build the offline training corpus: ``python -m vssflow_cli.train.corpus DIR [--langs en,fr] [--limit N] [--jobs 1]``.

Steps, per source recording (see :mod:`vssflow_cli.train.sources` for where recordings come from):

1. decode to 16 kHz mono float32 (ffmpeg);
2. trim leading/trailing silence: 10 ms frames quieter than 40 dB below the loudest frame (and below -60 dBFS
   absolute) at either end are cut, keeping 50 ms of margin;
3. cut into clips of at most 5.0 s (the tiny model's 125-frame window): speech prompts longer than that are
   skipped; long sounds are cut into consecutive 5 s pieces (at most ``MAX_CHUNKS`` per file);
4. loudness: gain so that the RMS over active frames (within 30 dB of the loudest) is -20 dBFS, then lowered if
   needed so the peak stays at or below 0.95 (-0.45 dBFS); clips whose source RMS is below -55 dBFS are dropped;
5. silence around the content, drawn per clip from its id: a sound's first piece gets 0.15-0.6 s of lead-in (so its
   first event is not at frame 0), speech 0.1-0.35 s before and 0.1-0.3 s after;
6. pad the audio to ``n_frames * 640`` samples with ``n_frames = ceil(duration * 25)``;
7. render a video (:mod:`vssflow_cli.train.render`): sound -> onsets (:func:`detect_onsets`) made visible;
   speech -> a talking face whose mouth follows the speech envelope;
8. features exactly as at inference: ``VisualFeatureStream`` on frames resized to 64x64 by ``resize_frames``,
   ``LipTracker`` on the full-size frames (speech only; zeros for sound), phonemes of the transcript stretched
   over the voiced span (speech only).

Outputs in DIR: ``clips/<id>.safetensors`` (tensors + string metadata), ``index.jsonl`` (one row per clip, appended
as clips finish and rewritten in build order at the end), ``heldout/<id>.mp4|.txt|.json`` for the test split,
``sources.json`` and ``LICENSES.md``. The split is ``test`` when sha1(source file path) % 20 == 0 (5%).
Rebuilding skips finished recordings (``done/<rec_id>.json``); every file is written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vssflow_cli import trim
from vssflow_cli.output import atomic_output, write_text
from vssflow_cli.train import render
from vssflow_cli.train.onsets import detect_onsets
from vssflow_cli.train.sources import ALL_LANGS, Package, Recording

log = logging.getLogger("vssflow.corpus")

SR = 16000
FPS = 25
SPL = SR // FPS  # samples per latent frame (640)
MAX_S = 5.0
MAX_CHUNKS = 6
MIN_SOUND_S = 0.03
TARGET_RMS_DB = -20.0
PEAK_LIMIT = 0.95
SILENT_DB = -55.0
ESPEAK_VOICE = {"en": "en-us", "es": "es-419", "fr": "fr-fr", "it": "it", "ru": "ru"}
TEST_MODULO = 20


# ----------------------------------------------------------------------------------------------- audio steps


def _ffmpeg(*args: str, stdin: bytes | None = None, what: str) -> bytes:
    """Run the bundled ffmpeg (``imageio_ffmpeg``) with an argument list; stdout bytes, or RuntimeError."""
    import imageio_ffmpeg

    argv = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    proc = subprocess.run(
        argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True, check=False
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"{what}: ffmpeg failed: {tail[0][:200]}")
    return proc.stdout


def decode(path: Path, fmt: str | None = None, sr: int = SR) -> np.ndarray:
    """Decode any file ffmpeg reads to mono float32 at ``sr``: (N,)."""
    url = "file:" + os.path.abspath(path)
    out = _ffmpeg(
        *(["-f", fmt] if fmt else []),
        "-i",
        url,
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(sr),
        "-f",
        "f32le",
        "pipe:1",
        what=f"decoding {path}",
    )
    return np.frombuffer(out, np.float32).copy()


def decode_recording(rec: Recording) -> np.ndarray:
    """The recording's waveform; composite recordings are their parts joined by ``gaps_s`` of silence."""
    if not rec.parts:
        return decode(rec.path, rec.fmt)
    pieces = []
    for part, gap in zip(rec.parts, rec.gaps_s):
        w = decode(part, rec.fmt)
        lo, hi = trim_bounds(w, pad_s=0.005)
        pieces += [w[lo:hi], np.zeros(int(gap * SR), np.float32)]
    return np.concatenate(pieces)


def frame_db(wave: np.ndarray) -> np.ndarray:
    """RMS in dBFS of consecutive 10 ms frames of a corpus waveform: (ceil(N / (SR / 100)),)."""
    return trim.frame_db(wave, SR)


def trim_bounds(wave: np.ndarray, rel_db: float = -40.0, abs_db: float = -60.0, pad_s: float = 0.05) -> tuple[int, int]:
    """Sample range [lo, hi) left after cutting quiet 10 ms frames at both ends (``pad_s`` margin kept)."""
    return trim.trim_bounds(wave, SR, rel_db=rel_db, abs_db=abs_db, pad_s=pad_s)


def active_rms_db(wave: np.ndarray) -> float:
    """RMS in dBFS over the frames within 30 dB of the loudest 10 ms frame."""
    db = frame_db(wave)
    if db.size == 0:
        return -120.0
    act = db[db > db.max() - 30]
    return float(10 * np.log10(np.mean(10 ** (act / 10)) + 1e-12))


def normalise(wave: np.ndarray) -> np.ndarray:
    """Active RMS to ``TARGET_RMS_DB``, then limited so the peak is at most ``PEAK_LIMIT``."""
    gain = 10 ** ((TARGET_RMS_DB - active_rms_db(wave)) / 20)
    peak = float(np.abs(wave).max()) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return (wave * gain).astype(np.float32)


def fade(wave: np.ndarray, fade_in_s: float = 0.0, fade_out_s: float = 0.0) -> np.ndarray:
    w = wave.copy()
    n_in, n_out = int(fade_in_s * SR), int(fade_out_s * SR)
    if n_in:
        w[:n_in] *= np.linspace(0, 1, n_in, dtype=np.float32)
    if n_out:
        w[-n_out:] *= np.linspace(1, 0, n_out, dtype=np.float32)
    return w


def pad_to_frames(wave: np.ndarray) -> tuple[np.ndarray, int]:
    n_frames = max(1, math.ceil(len(wave) / SPL - 1e-9))
    return np.pad(wave, (0, n_frames * SPL - len(wave))).astype(np.float32), n_frames


def split_of(source_file: str) -> str:
    """'test' for 1 in 20 source files (sha1 of the package-relative path), else 'train'."""
    return "test" if int(hashlib.sha1(source_file.encode("utf-8")).hexdigest(), 16) % TEST_MODULO == 0 else "train"


# ----------------------------------------------------------------------------------------------- clip plans


@dataclass
class ClipPlan:
    """One clip to build: its final (normalised, padded) audio and where speech is in it."""

    clip_id: str
    rec: Recording
    wave: np.ndarray  # normalised, padded to n_frames * SPL
    n_frames: int
    voiced: tuple[float, float] = (0.0, 0.0)  # speech span in seconds
    chunk: int = 0


def plan_speech(rec: Recording, wave: np.ndarray) -> tuple[list[ClipPlan], str]:
    lo, hi = trim_bounds(wave)
    if hi - lo < int(0.1 * SR):
        return [], "silent"
    if 20 * np.log10(np.sqrt(np.mean(wave[lo:hi] ** 2)) + 1e-12) < SILENT_DB:
        return [], "silent"
    speech = normalise(wave[lo:hi])
    rng = np.random.default_rng(render.stable_seed("pads", rec.rec_id))
    pre, post = rng.uniform(0.1, 0.35), rng.uniform(0.1, 0.3)
    dur = len(speech) / SR
    if dur + 0.2 > MAX_S:
        return [], "too long"
    if dur + pre + post > MAX_S:
        pre = post = (MAX_S - dur) / 2
    n_pre = int(pre * SR)
    full = np.concatenate([np.zeros(n_pre, np.float32), speech, np.zeros(int(post * SR), np.float32)])
    full, n_frames = pad_to_frames(full)
    return [ClipPlan(rec.rec_id, rec, full, n_frames, voiced=(n_pre / SR, (n_pre + len(speech)) / SR))], ""


def plan_sound(rec: Recording, wave: np.ndarray) -> tuple[list[ClipPlan], str]:
    lo, hi = trim_bounds(wave)
    if hi - lo < int(MIN_SOUND_S * SR):
        return [], "silent"
    body = wave[lo:hi]
    src_db = active_rms_db(body)
    if src_db < SILENT_DB:
        return [], "silent"
    body = normalise(body)  # one gain per file, so pieces keep their relative loudness
    rng = np.random.default_rng(render.stable_seed("pads", rec.rec_id))
    pre, post = rng.uniform(0.15, 0.6), rng.uniform(0.1, 0.4)
    plans: list[ClipPlan] = []
    pos, chunk = 0, 0
    while pos < len(body) and chunk < MAX_CHUNKS:
        lead = pre if chunk == 0 else 0.0
        room = int((MAX_S - lead) * SR)
        piece = body[pos : pos + room]
        last = pos + room >= len(body)
        if last and len(piece) + int(post * SR) <= int((MAX_S - lead) * SR):
            tail = np.zeros(int(post * SR), np.float32)
        else:
            tail = np.zeros(0, np.float32)
        if chunk > 0 and len(piece) < SR:  # a short remainder adds nothing
            break
        piece = fade(piece, 0.02 if chunk > 0 else 0.0, 0.0 if last else 0.02)
        if chunk > 0 and active_rms_db(piece) < SILENT_DB + TARGET_RMS_DB - src_db:
            pos += room  # near-silent stretch inside a long file
            chunk += 1
            continue
        full = np.concatenate([np.zeros(int(lead * SR), np.float32), piece, tail])
        full, n_frames = pad_to_frames(full)
        plans.append(ClipPlan(f"{rec.rec_id}-c{chunk}", rec, full, n_frames, chunk=chunk))
        pos += room
        chunk += 1
    return plans, "" if plans else "silent"


# ----------------------------------------------------------------------------------------------- rendering


_FACE: tuple[np.ndarray, np.ndarray] | None = None


def face_and_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """The real face photo every talking head is made from (scikit-image's astronaut, public domain, NASA),
    and its mediapipe landmarks (found once per process)."""
    global _FACE
    if _FACE is None:
        from skimage import data

        from vssflow_cli.lips import face_landmarks

        face = np.ascontiguousarray(np.asarray(data.astronaut())[..., :3])
        pts = face_landmarks(face)
        if pts is None:
            raise RuntimeError("mediapipe found no face in skimage.data.astronaut()")
        _FACE = (face, pts)
    return _FACE


def render_plan(plan: ClipPlan) -> tuple[np.ndarray, dict]:
    """Frames (n_frames, H, W, 3) uint8 and what was drawn (onsets or apertures)."""
    seed = render.stable_seed("clip", plan.clip_id)
    if plan.rec.kind == "sound":
        onsets = detect_onsets(plan.wave, SR)
        onsets = onsets[onsets < plan.n_frames / FPS]
        frames = render.render_sound_video(
            plan.wave, SR, onsets, plan.rec.category, plan.n_frames, seed, sprite_image=plan.rec.image
        )
        return frames, {"onsets": onsets.astype(np.float32)}
    face, pts = face_and_landmarks()
    apertures = render.speech_apertures(plan.wave, SR, plan.n_frames)
    frames = render.render_speech_video(face, pts, apertures, seed)
    return frames, {"apertures": apertures}


def compute_features(frames: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """video (T, 208), sync (T, 18), lip (T, 8) exactly as the inference path computes them."""
    from vssflow_cli.vision import VisualFeatureStream, resize_frames

    video, sync = VisualFeatureStream().push(resize_frames(frames, 64))
    if kind == "speech":
        from vssflow_cli.lips import LipTracker

        with LipTracker() as tracker:
            lip = np.asarray(tracker.push(frames).features, np.float32)
    else:
        lip = np.zeros((len(frames), 8), np.float32)
    return {"video": video.astype(np.float32), "sync": sync.astype(np.float32), "lip": lip}


def phoneme_frames(plan: ClipPlan) -> np.ndarray:
    if plan.rec.kind != "speech":
        return np.zeros(plan.n_frames, np.int64)
    from vssflow_cli.text import phoneme_ids, phoneme_track, phonemize

    ids = phoneme_ids(phonemize(plan.rec.text, ESPEAK_VOICE.get(plan.rec.lang, plan.rec.lang)))
    return phoneme_track([(plan.voiced[0], plan.voiced[1], ids)], plan.n_frames, fps=FPS).astype(np.int64)


# ----------------------------------------------------------------------------------------------- writing


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        write(str(tmp))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)


def write_mp4(path: Path, frames: np.ndarray, wave: np.ndarray) -> None:
    """H.264 (yuv420p, crf 18) at 25 fps + the clip's audio as AAC; durations match by construction."""
    h, w = frames.shape[1:3]

    def enc(tmp: str) -> None:
        with tempfile.TemporaryDirectory() as td:
            wav = os.path.join(td, "a.wav")
            import soundfile as sf

            sf.write(wav, wave, SR, subtype="FLOAT")
            _ffmpeg(
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-s",
                f"{w}x{h}",
                "-r",
                str(FPS),
                "-i",
                "pipe:0",
                "-i",
                "file:" + wav,
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                "libx264",
                "-preset",
                "medium",
                "-crf",
                "18",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                "-y",
                "file:" + tmp,
                stdin=np.ascontiguousarray(frames).tobytes(),
                what=f"encoding {path.name}",
            )

    _atomic_write(path, enc)


def clip_row(plan: ClipPlan, split: str) -> dict:
    r = plan.rec
    return {
        "id": plan.clip_id,
        "kind": r.kind,
        "duration": round(plan.n_frames / FPS, 3),
        "frames": plan.n_frames,
        "split": split,
        "lang": r.lang,
        "category": r.category,
        "text": r.text,
        "caption": r.caption,
        "source_package": r.package,
    }


def write_clip(root: Path, plan: ClipPlan) -> dict:
    """Render, extract features and write one clip (and its held-out files); returns its index row."""
    from safetensors.numpy import save_file

    r = plan.rec
    split = split_of(r.source_file)
    frames, drawn = render_plan(plan)
    if len(frames) != plan.n_frames:
        raise RuntimeError(f"{plan.clip_id}: rendered {len(frames)} frames for {plan.n_frames}")
    feats = compute_features(frames, r.kind)
    tensors = {
        "wave": plan.wave.astype(np.float32),
        **feats,
        "phonemes": phoneme_frames(plan),
        "onsets": drawn.get("onsets", np.zeros(0, np.float32)).astype(np.float32),
        "apertures": drawn.get("apertures", np.zeros(plan.n_frames, np.float32)).astype(np.float32),
    }
    meta = {
        "kind": r.kind,
        "text": r.text,
        "lang": r.lang,
        "category": r.category,
        "caption": r.caption,
        "source_package": r.package,
        "source_version": r.version,
        "source_file": r.source_file,
        "licence": r.licence,
        "split": split,
        "sample_rate": str(SR),
        "fps": str(FPS),
        "voiced_start": f"{plan.voiced[0]:.4f}",
        "voiced_end": f"{plan.voiced[1]:.4f}",
        "chunk": str(plan.chunk),
    }
    if split == "test":
        held = root / "heldout"
        write_mp4(held / f"{plan.clip_id}.mp4", frames, plan.wave)
        if r.kind == "speech":
            _write_text(held / f"{plan.clip_id}.txt", r.text + "\n")
        info = {
            "id": plan.clip_id,
            "kind": r.kind,
            "lang": r.lang,
            "text": r.text,
            "category": r.category,
            "caption": r.caption,
            "fps": FPS,
            "sample_rate": SR,
            "duration": plan.n_frames / FPS,
            "voiced": list(plan.voiced),
            "onsets": [round(float(x), 3) for x in tensors["onsets"]],
            "apertures": [round(float(x), 4) for x in tensors["apertures"]] if r.kind == "speech" else [],
        }
        _write_text(held / f"{plan.clip_id}.json", json.dumps(info, ensure_ascii=False) + "\n")
    _atomic_write(root / "clips" / f"{plan.clip_id}.safetensors", lambda tmp: save_file(tensors, tmp, metadata=meta))
    return clip_row(plan, split)


def process_recording(root: Path, rec: Recording) -> dict:
    """Build every clip of one recording (skipped if its done-record exists); returns the done-record."""
    done = root / "done" / f"{rec.rec_id}.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    t0 = time.time()
    wave = decode_recording(rec)
    plans, why = (plan_speech if rec.kind == "speech" else plan_sound)(rec, wave)
    rows = [write_clip(root, p) for p in plans]
    record = {
        "rec_id": rec.rec_id,
        "kind": rec.kind,
        "package": rec.package,
        "source_file": rec.source_file,
        "source_seconds": round(len(wave) / SR, 3),
        "rows": rows,
        "skipped": why,
        "seconds": round(time.time() - t0, 2),
    }
    _write_text(done, json.dumps(record, ensure_ascii=False) + "\n")
    return record


def _worker(args: tuple[str, Recording]) -> dict:
    root, rec = args
    try:
        return process_recording(Path(root), rec)
    except Exception as e:  # noqa: BLE001 - one broken file must not stop a long build; reported, retried next run
        return {
            "rec_id": rec.rec_id,
            "kind": rec.kind,
            "package": rec.package,
            "rows": [],
            "error": f"{type(e).__name__}: {e}",
        }


# ----------------------------------------------------------------------------------------------- ordering


def build_order(
    speech: dict[str, list[Recording]], sounds: list[Recording], extra_speech: list[Recording]
) -> list[Recording]:
    """English speech interleaved with sounds round-robin over categories, then other languages, then extras."""
    by_cat: dict[str, list[Recording]] = {}
    for r in sounds:
        by_cat.setdefault(r.category, []).append(r)
    mixed_sounds: list[Recording] = []
    cats = sorted(by_cat, key=lambda c: render.stable_seed("order", c))
    while any(by_cat.values()):
        for c in cats:
            if by_cat[c]:
                mixed_sounds.append(by_cat[c].pop(0))
    first = speech.get("en", [])
    order: list[Recording] = []
    n = max(len(first), len(mixed_sounds))
    for i in range(n):
        if i < len(first):
            order.append(first[i])
        if i < len(mixed_sounds):
            order.append(mixed_sounds[i])
    others = [speech[lang] for lang in speech if lang != "en"]
    for i in range(max((len(x) for x in others), default=0)):
        order += [x[i] for x in others if i < len(x)]
    return order + extra_speech


def _interleave_by_lang(recs: list[Recording]) -> list[Recording]:
    by: dict[str, list[Recording]] = {}
    for r in recs:
        by.setdefault(r.lang, []).append(r)
    out = []
    for i in range(max((len(v) for v in by.values()), default=0)):
        out += [v[i] for k, v in sorted(by.items()) if i < len(v)]
    return out


def collect(root: Path, langs: tuple[str, ...]) -> tuple[dict[str, Package], list[Recording]]:
    from vssflow_cli.train import sources

    pkgs = sources.fetch_all(root, langs)
    speech = {lang: sources.asterisk_recordings(pkgs, lang) for lang in langs}
    sounds = sources.sound_recordings(pkgs, root)
    extra = _interleave_by_lang(sources.tuxpaint_speech(pkgs, langs))
    order = build_order(speech, sounds, extra)
    ids = [r.rec_id for r in order]
    if len(set(ids)) != len(ids):
        raise RuntimeError("duplicate recording ids")
    return pkgs, order


# ----------------------------------------------------------------------------------------------- build


def _write_index(root: Path, records: list[dict]) -> None:
    _write_text(
        root / "index.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for rec in records for r in rec.get("rows", [])),
    )


def _append_rows(root: Path, rows: list[dict]) -> None:
    if not rows:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    fd = os.open(root / "index.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write per recording: readers never see half a line in practice
    finally:
        os.close(fd)


def summarise(records: list[dict]) -> dict:
    out: dict = {"recordings": len(records), "errors": [], "skipped": {}, "clips": 0, "by": {}}
    for rec in records:
        if rec.get("error"):
            out["errors"].append(f"{rec['rec_id']}: {rec['error']}")
        if rec.get("skipped"):
            out["skipped"][rec["skipped"]] = out["skipped"].get(rec["skipped"], 0) + 1
        for r in rec.get("rows", []):
            out["clips"] += 1
            keys = [f"kind={r['kind']}", f"split={r['split']}", f"package={r['source_package']}"]
            keys.append(f"lang={r['lang']}" if r["kind"] == "speech" else f"group={r['category'].split('/')[0]}")
            for k in keys:
                b = out["by"].setdefault(k, {"clips": 0, "minutes": 0.0})
                b["clips"] += 1
                b["minutes"] = round(b["minutes"] + r["duration"] / 60, 2)
    return out


def write_licences(
    root: Path, pkgs: dict[str, Package], order: list[Recording], records: list[dict], licences_out: Path | None = None
) -> None:
    """DIR/LICENSES.md (+ a copy at ``licences_out``) and DIR/sources.json from what was actually built."""
    from vssflow_cli.train import sources

    by_id = {r.rec_id: r for r in order}
    used: dict[str, tuple[int, set[str]]] = {}
    for rec in records:
        n = len(rec.get("rows", []))
        if not n:
            continue
        r = by_id[rec["rec_id"]]
        clips, lic = used.get(r.package, (0, set()))
        used[r.package] = (clips + n, lic | {r.licence})
    for name, pkg in pkgs.items():  # transcripts of the prompts that were used
        if name.startswith("asterisk-core-sounds-") and not name.endswith("-g722") and f"{name}-g722" in used:
            used[name] = (0, {sources.read_copyright(pkg).licence_for(name.split("-")[-1] + "-core-sounds")})
    text = sources.licences_markdown(pkgs, used)
    _write_text(root / "LICENSES.md", text)
    if licences_out is not None:
        _write_text(Path(licences_out), text)
    src = {
        n: {
            "version": p.version,
            "deb_bytes": p.size_bytes,
            "licences": sources.read_copyright(p).licences,
            "licences_used": sorted(used.get(n, (0, set()))[1]),
            "clips": used.get(n, (0, set()))[0],
        }
        for n, p in sorted(pkgs.items())
    }
    _write_text(root / "sources.json", json.dumps(src, indent=1) + "\n")


def build_corpus(
    root: Path,
    langs: tuple[str, ...] = ALL_LANGS,
    limit: int | None = None,
    jobs: int = 1,
    licences_out: Path | None = None,
    build: bool = True,
) -> dict:
    """Fetch, unpack and build everything into ``root``; returns a summary (also written to ``summary.json``).

    ``build=False`` only rewrites ``index.jsonl``, ``LICENSES.md``, ``sources.json`` and ``summary.json`` from
    the recordings finished so far.
    """
    t0 = time.time()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    pkgs, order = collect(root, langs)
    if limit:
        order = order[:limit]
    for sub in ("clips", "heldout", "done"):  # leftovers of an interrupted build
        for part in (root / sub).glob(".*.part"):
            part.unlink()
    log.info("%d recordings to build from %d packages into %s", len(order), len(pkgs), root)

    # index.jsonl = finished recordings first (rewritten), then rows appended as recordings finish
    finished = {}
    for rec in order:
        p = root / "done" / f"{rec.rec_id}.json"
        if p.exists():
            finished[rec.rec_id] = json.loads(p.read_text(encoding="utf-8"))
    _write_index(root, list(finished.values()))
    todo = [r for r in order if r.rec_id not in finished] if build else []
    log.info("%d already built, %d to do", len(finished), len(todo))

    results: dict[str, dict] = dict(finished)
    last_log = time.time()
    args = [(str(root), r) for r in todo]
    if jobs > 1:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(jobs)
        it = pool.imap(_worker, args, chunksize=1)
    else:
        pool, it = None, map(_worker, args)
    failed = succeeded = 0
    try:
        for i, rec in enumerate(it, 1):
            results[rec["rec_id"]] = rec
            _append_rows(root, rec.get("rows", []))
            if rec.get("error"):
                failed += 1
                log.warning("%s failed: %s", rec["rec_id"], rec["error"])
                if failed >= 20 and not succeeded:
                    raise RuntimeError(f"the first {failed} recordings all failed, last: {rec['error']}")
            else:
                succeeded += 1
            if time.time() - last_log > 60 or i == len(todo):
                n_clips = sum(len(r.get("rows", [])) for r in results.values())
                log.info("%d/%d recordings, %d clips, %.0f s", len(finished) + i, len(order), n_clips, time.time() - t0)
                last_log = time.time()
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    records = [results[r.rec_id] for r in order if r.rec_id in results]
    _write_index(root, records)
    write_licences(root, pkgs, order, records, licences_out)
    summary = summarise(records)
    summary["seconds"] = round(time.time() - t0, 1)
    _write_text(root / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary


def build(out_dir: Path, langs: tuple[str, ...] = ALL_LANGS, limit: int | None = None, jobs: int = 1,
          licences_out: Path | None = None, finalize: bool = False) -> int:
    """``vssflow data build``: build (or resume, or with ``finalize`` only re-index) a corpus, print its summary.

    Returns the exit code: 1 if some recordings failed. UsageError for an unknown language.
    """
    from vssflow_cli.errors import UsageError

    bad = [x for x in langs if x not in ALL_LANGS]
    if bad:
        raise UsageError(f"unknown language(s) {bad}; choose from {','.join(ALL_LANGS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    summary = build_corpus(out_dir, langs, limit, max(1, jobs), licences_out, build=not finalize)
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return 1 if summary["errors"] else 0


def parse_langs(spec: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in spec.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    from vssflow_cli.errors import UsageError

    ap = argparse.ArgumentParser(prog="python -m vssflow_cli.train.corpus", description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, help="corpus folder (created; outside the repository)")
    ap.add_argument("--langs", default=",".join(ALL_LANGS), help="speech languages, from " + ",".join(ALL_LANGS))
    ap.add_argument("--limit", type=int, default=None, help="build only the first N recordings of the build order")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--licences-out", type=Path, default=None, help="also write LICENSES.md here")
    ap.add_argument("--finalize", action="store_true", help="build nothing; rewrite index, licences and summary")
    a = ap.parse_args(argv)
    try:
        return build(a.dir, parse_langs(a.langs), a.limit, a.jobs, a.licences_out, a.finalize)
    except UsageError as e:
        ap.error(str(e))

if __name__ == "__main__":
    sys.exit(main())
