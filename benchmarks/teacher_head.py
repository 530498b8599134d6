"""What the teacher's mel head costs a dub: Whisper WER/CER of the held-out English prompts, head vs. full Kokoro.

For each way of reading the script (``full``: Kokoro's waveform, its log-mel; ``head``: the graph cut before the
generator + weights/teacher-head/) the held-out speech clips get the prior ``vssflow dub`` would build
(:func:`vssflow_cli.train.evaluate.add_priors`), and two rows are judged: the model (the DiT from that prior, as
``vssflow eval``'s ``model`` row) and ``prior`` (the prior decoded alone, no DiT). The teacher's seconds per line
are timed with the readings cache off.

    python benchmarks/teacher_head.py --corpus /work/corpus [--model weights/vssflow-tiny] [--ways full,head] \
        [--seeds 0,1] [--steps N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--model", default=None, help="bundle folder or name (default: the embedded model)")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--seeds", default="0", help="noise seeds, comma-separated (WER pooled over them)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the bundle's)")
    ap.add_argument("--ways", default="full,head", help="which readings to judge: full, head or both")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    os.environ["VSSFLOW_NO_CACHE"] = "1"  # time the teacher, not the cache

    import numpy as np

    from vssflow_cli.audio import vocode
    from vssflow_cli.runtime import Synthesizer
    from vssflow_cli.speech_judge import WhisperJudge
    from vssflow_cli.teacher import KokoroTeacher
    from vssflow_cli.train.evaluate import add_priors, generate, judge_speech, load_heldout

    synth = Synthesizer.from_spec(a.model)
    judge = WhisperJudge()
    out: dict = {"model": synth.manifest.name, "seeds": a.seeds, "steps": a.steps or synth.manifest.sampler.steps}
    for name in a.ways.split(","):
        head = {"full": False, "head": True}[name]
        teacher = KokoroTeacher(head=head)
        teacher.speak_logmel("Warm up.", fast=head)  # sessions loaded before the clock starts
        clips = [c for c in load_heldout(a.corpus, synth.config, a.limit) if c.kind == "speech"]
        t0 = time.perf_counter()
        frames = [len(teacher.speak_logmel(c.text, fast=head)) for c in clips]
        per_line = (time.perf_counter() - t0) / len(clips)
        add_priors(clips, synth, teacher, fast=head)
        seeds = [int(s) for s in a.seeds.split(",")]
        model = [
            wave
            for seed in seeds
            for wave in generate(synth, clips, lambda i, cs=clips: cs[i].conds, steps=a.steps, cfg=None, seed=seed)
        ]
        spl = synth.config.audio.samples_per_latent
        prior = [vocode(synth.logmel(c.conds["prior"][None])[0], synth.config.audio)[: c.frames * spl] for c in clips]
        rows = {"model": judge_speech(clips * len(seeds), model, judge), "prior": judge_speech(clips, prior, judge)}
        out[name] = {
            "teacher_s_per_line": round(per_line, 3),
            "speech_s_per_line": round(float(np.mean(frames)) / 100, 2),
            **{f"{row}_{k}": v for row, r in rows.items() for k, v in r.items() if k != "transcripts"},
            "transcripts": rows["model"].get("transcripts"),
        }
        print(name, {k: v for k, v in out[name].items() if k != "transcripts"}, file=sys.stderr)
    out["clips"] = len(clips)
    text = json.dumps(out, indent=2)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
