"""Teacher priors for the corpus: ``python -m vssflow_cli.train.priors CORPUS [--langs en] [--follow]``.

For every built speech clip of the chosen languages, the TTS teacher (:mod:`vssflow_cli.teacher`) reads the clip's
transcript, and its log-mel is aligned by DTW onto the clip's voiced span (:func:`vssflow_cli.prior.align_to_speech`).
The result is written to ``CORPUS/priors/<id>.safetensors``: ``prior_mel`` (F, n_mels) float16 at the mel frame rate,
the clip's full length, the log-mel of silence outside the voiced span. Held-out clips get no aligned prior: the
evaluation builds theirs the way ``vssflow dub`` does, from the lips (an aligned prior would leak the true timing).

``--follow`` keeps polling ``index.jsonl`` while a corpus build is still adding clips. Finished clips are skipped, so
the command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("vssflow.priors")

TEACHER_LANGS = {"en": "en-us"}


def prior_path(corpus: Path, clip_id: str, head: bool = False) -> Path:
    """``priors/<id>.safetensors``, or ``priors/<id>.head.safetensors`` for the prior read through the mel head."""
    return Path(corpus) / "priors" / f"{clip_id}{'.head' if head else ''}.safetensors"


def build_prior(teacher, wave: np.ndarray, text: str, lang: str, voiced: tuple[float, float],
                head: bool = False) -> np.ndarray:
    """The aligned prior log-mel (F, n_mels) of one clip: teacher reading DTW-aligned onto ``voiced`` (seconds);
    ``head``: the reading's log-mel from the teacher's mel head (``dub --fast-teacher``) instead of its waveform."""
    from vssflow_cli.audio import log_mel
    from vssflow_cli.config import AudioConfig
    from vssflow_cli.prior import align_to_speech, prior_track, teacher_logmel

    cfg = AudioConfig()
    target = log_mel(wave, cfg)
    a, b = int(round(voiced[0] * cfg.mel_fps)), int(round(voiced[1] * cfg.mel_fps))
    a, b = max(0, a), min(len(target), b)
    reading = teacher.speak_logmel(text, lang, fast=True) if head else teacher_logmel(teacher.speak(text, lang), cfg)
    if b - a < 4 or len(reading) < 4:
        raise ValueError("nothing to align")
    aligned = align_to_speech(reading, target[a:b])
    return prior_track(len(target), [(a, aligned)], cfg.n_mels)


def run(corpus: Path, langs: tuple[str, ...] = ("en",), follow: bool = False, idle_exit_s: float = 600.0,
        shard: tuple[int, int] = (0, 1), head: bool = False) -> int:
    """Build missing priors (of shard ``i`` of ``n``: clips whose index is i mod n); returns how many were written."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from vssflow_cli.teacher import DEFAULT_VOICE, KOKORO_SHA256, KokoroTeacher
    from vssflow_cli.train.dataset import read_index

    teacher = KokoroTeacher(threads=1, head=head)
    if head and teacher.mel_head() is None:
        raise SystemExit("--head: no teacher head (weights/teacher-head/) or onnx to cut the Kokoro graph")
    written, failed, idle_since = 0, set(), time.time()
    while True:
        todo = [
            r for k, r in enumerate(read_index(corpus))
            if k % shard[1] == shard[0] and r["kind"] == "speech" and r.get("lang") in langs
            and r.get("split") == "train" and r["id"] not in failed and not prior_path(corpus, r["id"], head).exists()
        ]
        for row in todo:
            src = Path(corpus) / "clips" / f"{row['id']}.safetensors"
            if not src.exists():
                continue
            meta = safe_open(str(src), "np").metadata()
            wave = load_file(str(src))["wave"]
            voiced = (float(meta["voiced_start"]), float(meta["voiced_end"]))
            try:
                mel = build_prior(teacher, wave, row["text"], TEACHER_LANGS[row["lang"]], voiced, head)
            except ValueError as e:
                log.warning("%s: %s", row["id"], e)
                failed.add(row["id"])
                continue
            info = {"teacher": "kokoro-82m-v1.0-int8", "voice": DEFAULT_VOICE, "teacher_sha256": KOKORO_SHA256,
                    "align": "dtw-mfcc20", **({"head_sha256": teacher.mel_head().sha256} if head else {})}
            out = prior_path(corpus, row["id"], head)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.part")
            save_file({"prior_mel": mel.astype(np.float16)}, str(tmp), metadata=info)
            tmp.replace(out)
            written += 1
            if written % 25 == 0:
                log.info("%d priors written", written)
        if todo:
            idle_since = time.time()
        if not follow or time.time() - idle_since > idle_exit_s:
            return written
        time.sleep(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vssflow_cli.train.priors", description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--langs", default="en", help="languages the teacher reads (default en)")
    ap.add_argument("--follow", action="store_true", help="keep polling while a corpus build adds clips")
    ap.add_argument("--shard", default="0/1", help="I/N: build only clips I mod N (run N processes in parallel)")
    ap.add_argument("--head", action="store_true", help="read through the teacher's mel head (dub --fast-teacher)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    langs = tuple(x.strip() for x in a.langs.split(",") if x.strip())
    bad = [x for x in langs if x not in TEACHER_LANGS]
    if bad:
        ap.error(f"the teacher reads only {','.join(TEACHER_LANGS)}, not {bad}")
    i, n_shards = (int(x) for x in a.shard.split("/"))
    n = run(a.corpus, langs, a.follow, shard=(i, n_shards), head=a.head)
    print(json.dumps({"written": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
