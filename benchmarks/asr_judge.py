"""Transcription and speech-judge figures on real asterisk prompts (issue 15, issue 11 part 1).

    python benchmarks/asr_judge.py --corpus /work/corpus --n 20 --json benchmarks/asr-judge-cpu2.json
    python benchmarks/asr_judge.py --corpus DIR --n 20 --only detect [--detector whisper]  # part 2 alone

Needs the corpus's unpacked Debian packages (``python -m vssflow_cli.train.corpus DIR`` fetches them):
``asterisk-core-sounds-{en,fr,es}`` (+ ``-g722``). Prompts: the first ``n`` of each language's test split
(sha1 rule of the corpus, sorted by id), decoded from the original G.722 files.

1. ``vssflow transcribe`` (the CLI, no flags) on the English prompts concatenated with 0.6 s gaps and muxed
   under ``examples/speaker.mp4`` looped: WER against the joined transcripts;
2. language detection (:func:`vssflow_cli.transcribe.detect_language`, what ``transcribe_full`` with no language
   uses) on the English, French and Spanish prompts (``--langs`` for others, e.g. ``en,fr,es,it,ru``), with the
   seconds each detection took; ``--detector whisper``
   measures Whisper's language token alone (the detection before issue 15's decoding check);
3. the judge (:class:`WhisperJudge`) on the English prompts, on espeak-ng reading the same texts, and on
   the prompts reversed in time (babble).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prompts(corpus: Path, lang: str, n: int) -> list[tuple[str, str, np.ndarray]]:
    """(rec_id, text, wave) of the first ``n`` test-split prompts of ``lang``."""
    from vssflow_cli.media import read_audio
    from vssflow_cli.train import sources
    from vssflow_cli.train.corpus import split_of

    pkgs = {}
    for name in (f"asterisk-core-sounds-{lang}", f"asterisk-core-sounds-{lang}-g722"):
        root = corpus / "unpacked" / name
        pkgs[name] = sources.Package(name, (root / ".unpacked").read_text().strip(), Path("/dev/null"), root)
    recs = sorted((r for r in sources.asterisk_recordings(pkgs, lang) if split_of(r.source_file) == "test"),
                  key=lambda r: r.rec_id)[:n]  # fmt: skip
    return [(r.rec_id, r.text, read_audio(r.path, 16000)) for r in recs]


def cli_wer(english: list[tuple[str, str, np.ndarray]], work: Path) -> dict:
    import soundfile as sf

    from vssflow_cli.media import ffmpeg_exe
    from vssflow_cli.speech_judge import wer
    from vssflow_cli.text import parse_script

    gap = np.zeros(int(0.6 * 16000), np.float32)
    audio = np.concatenate([x for _, _, w in english for x in (w, gap)])
    sf.write(work / "speech.wav", audio, 16000)
    video = work / "prompts.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i",
                    str(REPO / "examples" / "speaker.mp4"), "-i", str(work / "speech.wav"), "-map", "0:v", "-map",
                    "1:a", "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(video)],
                   check=True)  # fmt: skip
    out = work / "prompts.txt"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "vssflow_cli", "transcribe", str(video), "-o", str(out)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))  # fmt: skip
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"vssflow transcribe failed: {r.stderr.strip()}")
    hyp = " ".join(s.text for s in parse_script(out))
    ref = " ".join(text for _, text, _ in english)
    return {"clip": f"{len(english)} English prompts + 0.6 s gaps ({audio.size / 16000:.1f} s) muxed under "
                    "examples/speaker.mp4 looped", "wer": round(wer(ref, hyp), 4), "wall_s": round(wall, 1),
            "stdout": r.stdout.strip(), "hypothesis": hyp}  # fmt: skip


def detection(recs: list[tuple[str, str, np.ndarray]], lang: str) -> dict:
    """How many prompts ``vssflow`` detects as ``lang``; in all, and among those of at least 1.5 s / 5 s."""
    from vssflow_cli.transcribe import detect_language

    detect_language(recs[0][2], None, "cpu")  # load the model outside the timing
    rows, seconds = [], []
    for rid, _, w in recs:
        t0 = time.perf_counter()
        got, p = detect_language(w, None, "cpu")
        seconds.append(time.perf_counter() - t0)
        rows.append((rid, w.size / 16000, got, round(p, 2)))
    out: dict = {"n": len(rows), "detected": sum(r[2] == lang for r in rows),
                 "seconds_per_detection": {"mean": round(float(np.mean(seconds)), 3),
                                           "max": round(float(np.max(seconds)), 3)}}  # fmt: skip
    for min_s in (1.5, 5.0):
        long = [r for r in rows if r[1] >= min_s]
        out[f"detected_of_{min_s:g}s_or_longer"] = f"{sum(r[2] == lang for r in long)}/{len(long)}"
    out["misses"] = {rid: [got, p, round(sec, 1)] for rid, sec, got, p in rows if got != lang}
    return out


def judge_rows(english: list[tuple[str, str, np.ndarray]]) -> dict:
    from vssflow_cli.speech_judge import WhisperJudge, edit_distance, normalize_text

    tests = str(Path(__file__).resolve().parents[1] / "tests")  # espeak-ng speech: the tests' ctypes synthesiser
    if tests not in sys.path:
        sys.path.append(tests)
    from synth_speech import espeak_speech

    judge = WhisperJudge()
    out: dict = {}
    for kind, make in (("real", lambda t, w: w), ("espeak", lambda t, w: espeak_speech(t, "en-us")),
                       ("reversed", lambda t, w: w[::-1].copy())):  # fmt: skip
        waves = [make(text, w) for _, text, w in english]
        t0 = time.perf_counter()
        scores = [(rid, judge.score(x, text, "en")) for (rid, text, _), x in zip(english, waves)]
        seconds = sum(x.size for x in waves) / 16000
        refs = [normalize_text(text) for _, text, _ in english]
        hyps = [normalize_text(s.transcript) for _, s in scores]
        out[kind] = {
            "wer": round(float(np.mean([s.wer for _, s in scores])), 4),  # mean of the per-prompt rates
            "cer": round(float(np.mean([s.cer for _, s in scores])), 4),
            "wer_pooled": round(sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
                                / sum(len(r.split()) for r in refs), 4),  # all errors / all reference words
            "cer_pooled": round(sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / sum(map(len, refs)), 4),
            "avg_logprob": round(float(np.mean([s.avg_logprob for _, s in scores])), 3),
            "no_speech_prob": round(float(np.mean([s.no_speech_prob for _, s in scores])), 3),
            "rtf": round((time.perf_counter() - t0) / seconds, 3),
            "looped": sum(s.looped for _, s in scores),
            "per_prompt": {rid: [s.transcript, round(s.wer, 3), round(s.avg_logprob, 3), round(s.compression_ratio, 2)]
                           for rid, s in scores},  # fmt: skip
        }
        out[kind]["_scores"] = [s for _, s in scores]
    for kind in ("real", "espeak"):  # reference-free: how often a voice clip outscores a babble clip
        voice, babble = out[kind]["_scores"], out["reversed"]["_scores"]
        for name, key in (("avg_logprob", lambda s: s.avg_logprob),
                          ("avg_logprob_loops_as_babble", lambda s: -math.inf if s.looped else s.avg_logprob)):
            out[kind][f"auc_vs_reversed_{name}"] = round(float(np.mean([[key(v) > key(b) for b in babble]
                                                                        for v in voice])), 3)  # fmt: skip
    for kind in out:
        del out[kind]["_scores"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--only", choices=("all", "detect"), default="all", help="detect: language detection alone")
    ap.add_argument("--langs", default="en,fr,es", help="detection languages (asterisk-core-sounds-LANG unpacked; "
                    "it and ru check that the fit for fr/es did not cost other languages)")  # fmt: skip
    ap.add_argument("--detector", choices=("decode", "whisper"), default="decode",
                    help="whisper: Whisper's language token alone, no decoding check (the old detection)")  # fmt: skip
    a = ap.parse_args()
    from vssflow_cli import transcribe

    if a.detector == "whisper":
        transcribe.DETECT_SURE = 0.0  # every first candidate is "sure": no decoding
    english = prompts(a.corpus, "en", a.n)
    res: dict = {"prompts_en": [rid for rid, _, _ in english], "loadavg_1m": os.getloadavg()[0],
                 "detector": {"kind": a.detector, "candidates": transcribe.DETECT_CANDIDATES,
                              "sure": transcribe.DETECT_SURE, "audio_weight": transcribe.DETECT_AUDIO_WEIGHT,
                              "text_weight": transcribe.DETECT_TEXT_WEIGHT,
                              "text_check": transcribe._text_identifier() is not None}}  # fmt: skip
    if a.only == "all":
        with tempfile.TemporaryDirectory() as work:
            res["transcribe_cli"] = cli_wer(english, Path(work))
    res["language"] = {lang: detection(english if lang == "en" else prompts(a.corpus, lang, a.n), lang)
                       for lang in a.langs.split(",")}  # fmt: skip
    if a.only == "all":
        res["judge"] = judge_rows(english)
    text = json.dumps(res, indent=1, ensure_ascii=False)
    if a.json:
        a.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
