"""Speaker-embedding figures on real voices: same-speaker and different-speaker cosines, speed.

Needs the unpacked Debian asterisk prompt packages (the corpus build's ``unpacked/`` folder):
English (Allison Smith), Spanish (also Allison Smith), French (June Wallack), Italian (Carlo
Flora, male), Russian (IvrvoiceRU). espeak-ng speech is made on the fly.

    python benchmarks/speaker_similarity.py /work/corpus/unpacked [--pairs 10] [--json out.json]

With ``--resemblyzer`` it also compares against Resemblyzer's own pipeline (webrtcvad trimming,
librosa mels, torch network): needs the package, librosa, webrtcvad and torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from vssflow_cli import speaker
from vssflow_cli.train.corpus import decode
from vssflow_cli.train.sources import ASTERISK_LANGS

ESPEAK_LINES = (
    "You are currently the only person in this conference.",
    "Please enter the channel number followed by the pound key.",
    "The conference will begin when the leader arrives.",
    "Your call is now first in line and will be answered by the next available representative.",
    "No directory entries match your search.",
)


def prompts(unpacked: Path, lang: str, n: int, min_s: float = 3.0, max_s: float = 8.0) -> list[np.ndarray]:
    """The first ``n`` prompts (sorted by name) of one voice lasting ``min_s``..``max_s`` s, 16 kHz mono."""
    voice = unpacked / f"asterisk-core-sounds-{lang}-g722/usr/share/asterisk/sounds" / ASTERISK_LANGS[lang]
    out = []
    for f in sorted(voice.glob("*.g722")):  # 64 kbit/s: 8000 bytes per second
        if min_s * 8000 <= f.stat().st_size <= max_s * 8000:
            out.append(decode(f, fmt="g722"))
            if len(out) == n:
                break
    return out


def espeak(text: str) -> np.ndarray:
    """espeak-ng speech (16 kHz) through the tests' ctypes synthesiser (tests/synth_speech.py)."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    from synth_speech import espeak_speech

    return espeak_speech(text, "en-us")


def summary(xs: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(xs), 4), "min": round(min(xs), 4), "max": round(max(xs), 4), "n": len(xs)}


def resemblyzer_embeddings(waves: list[np.ndarray]) -> np.ndarray:
    """Resemblyzer's own embeddings (preprocess_wav with webrtcvad, embed_utterance): (len(waves), 256)."""
    from vssflow_cli.train.export_speaker import import_resemblyzer

    rz = import_resemblyzer()
    enc = rz.VoiceEncoder("cpu", verbose=False)
    return np.stack([enc.embed_utterance(rz.preprocess_wav(w)) for w in waves])



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("unpacked", type=Path, help="folder holding asterisk-core-sounds-*-g722/")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resemblyzer", action="store_true", help="also compare with Resemblyzer's own pipeline")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    n = a.pairs
    en = prompts(a.unpacked, "en", 2 * n)
    emb = {"en": np.stack([speaker.embed(w, threads=a.threads) for w in en])}
    for lang in ("es", "fr", "it", "ru"):
        emb[lang] = np.stack([speaker.embed(w, threads=a.threads) for w in prompts(a.unpacked, lang, n)])
    emb["espeak"] = np.stack([speaker.embed(espeak(t), threads=a.threads) for t in ESPEAK_LINES])

    cos = speaker.similarity
    out: dict = {"same_speaker_en_en": summary([cos(emb["en"][2 * i], emb["en"][2 * i + 1]) for i in range(n)])}
    out["en_vs_es_same_person_other_language"] = summary([cos(emb["en"][i], emb["es"][i]) for i in range(n)])
    for lang in ("fr", "it", "ru"):
        out[f"en_vs_{lang}"] = summary([cos(emb["en"][i], emb[lang][i]) for i in range(n)])
    k = len(ESPEAK_LINES)
    out["en_vs_espeak"] = summary([cos(emb["en"][i], emb["espeak"][i % k]) for i in range(n)])
    out["espeak_vs_espeak"] = summary([cos(emb["espeak"][i], emb["espeak"][j]) for i in range(k) for j in range(i)])

    # speed: one 5 s stretch of speech, the session already loaded; wall and CPU (all threads) time
    clip = np.concatenate(en)[: 5 * 16000]
    wall, cpu = [], []
    for _ in range(20):
        t0, c0 = time.perf_counter(), time.process_time()
        speaker.embed(clip, threads=a.threads)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out["embed_5s_ms"] = {"median": round(1e3 * statistics.median(wall), 1), "min": round(1e3 * min(wall), 1),
                          "cpu_median": round(1e3 * statistics.median(cpu), 1), "threads": a.threads}  # fmt: skip

    if a.resemblyzer:
        ref = resemblyzer_embeddings(en)
        out["ours_vs_resemblyzer_pipeline_same_clip"] = summary([cos(x, y) for x, y in zip(emb["en"], ref)])
        out["resemblyzer_same_speaker_en_en"] = summary([cos(ref[2 * i], ref[2 * i + 1]) for i in range(n)])
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
