"""Does a stronger prompt weight make foley follow ``--prompt``? A sweep of the prompt's own guidance weight.

For each ``prompt_cfg`` the held-out sound clips are generated with their own prompt and with the prompt of a clip
of another class (the eval's ``own_prompt`` and ``shuffled_prompt`` rows, :func:`vssflow_cli.train.evaluate.
prompt_rows`), and the sound judge (aisfx probe) scores them. ``none`` is plain guidance (the prompt weighted with
``cfg`` like every other condition, two network branches, whatever the bundle's ``sampler.prompt_cfg``); a number
adds the third branch (batch 3B).

    python benchmarks/prompt_guidance.py --corpus /work/corpus [--model weights/vssflow-tiny] \\
        [--weights none,5,8] [--cfg 3] [--limit 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--model", default=None, help="bundle folder or name (default: the embedded model)")
    ap.add_argument("--weights", default="none,5,8", help="prompt weights to try; 'none' = plain guidance")
    ap.add_argument("--cfg", type=float, default=None, help="the guidance weight of the other conditions")
    ap.add_argument("--rows", default="own_prompt,shuffled_prompt")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    from vssflow_cli.runtime import Synthesizer
    from vssflow_cli.train.evaluate import load_heldout, prompt_rows
    from vssflow_cli.train.sound_judge import SoundJudge

    synth = Synthesizer.from_spec(a.model)
    clips = [c for c in load_heldout(a.corpus, synth.config, a.limit) if c.kind == "sound"]
    judge = SoundJudge()
    out: dict = {"model": synth.manifest.name, "cfg": a.cfg if a.cfg is not None else synth.manifest.sampler.cfg,
                 "sweep": {}}
    for w in a.weights.split(","):
        cfg = a.cfg if a.cfg is not None else synth.manifest.sampler.cfg
        weight = cfg if w == "none" else float(w)  # prompt weight = cfg is plain guidance (not the bundle's default)
        t0 = time.perf_counter()
        r = prompt_rows(synth, clips, judge, steps=None, cfg=a.cfg, seed=a.seed, prompt_cfg=weight,
                        rows=tuple(a.rows.split(",")))
        out.setdefault("n", r["n"])
        out.setdefault("chance", r["chance"])
        out.setdefault("real", r["real"]["accuracy"])
        out["sweep"][w] = {k: {"accuracy": v["accuracy"], "follows_shuffled_class": v["follows_shuffled_class"]}
                           for k, v in r.items() if isinstance(v, dict) and "accuracy" in v and k != "real"}
        out["sweep"][w]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"prompt_cfg={w}: {out['sweep'][w]}", flush=True)
    text = json.dumps(out, indent=2)
    if a.json:
        a.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
