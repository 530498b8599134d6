"""Sweep sampler settings on the held-out English speech: ``python -m vssflow_cli.train.sweep --corpus DIR``.

For each (solver, steps, cfg, precision) it generates every held-out English speech clip from its conditions and
prints one JSON line with the WER and closed-set transcript identification (pocketsphinx, as in ``vssflow eval``),
the lip-envelope correlation and the seconds it took. Used to choose the bundle's sampler defaults; foley onsets
are checked with ``vssflow eval``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vssflow_cli.train.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--model", default=None, help="bundle (default: the embedded one)")
    ap.add_argument("--cfg", default="3", help="comma-separated guidance weights")
    ap.add_argument("--steps", default="16", help="comma-separated step counts")
    ap.add_argument("--solver", default="midpoint", help="comma-separated solvers")
    ap.add_argument("--precision", default="auto", help="comma-separated: auto, fp32, int8")
    ap.add_argument("--limit", type=int, default=None, help="at most N English clips")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    from vssflow_cli.runtime import Synthesizer
    from vssflow_cli.train.evaluate import Recogniser, generate, load_heldout, score

    synths: dict[str, Synthesizer] = {}
    asr = Recogniser()
    clips = None
    grid = itertools.product(a.solver.split(","), [int(s) for s in a.steps.split(",")],
                             [float(c) for c in a.cfg.split(",")], a.precision.split(","))
    for solver, steps, cfg, precision in grid:
        if precision not in synths:
            synths[precision] = Synthesizer.from_spec(a.model, device="cpu", precision=precision)
        synth = synths[precision]
        if clips is None:
            clips = [c for c in load_heldout(a.corpus, synth.config) if c.kind == "speech" and c.lang.startswith("en")]
            clips = clips[: a.limit] if a.limit else clips
            if not clips:
                print(f"no held-out English speech in {a.corpus}", file=sys.stderr)
                return 3
        t0 = time.perf_counter()
        waves = generate(synth, clips, lambda i, cs=clips: cs[i].conds, steps=steps, cfg=cfg, seed=a.seed,
                         solver=solver)
        m = score(clips, waves, synth.config, asr)
        row = {"solver": solver, "steps": steps, "cfg": cfg, "precision": synth.precision, "wer": m["wer"],
               "transcript_id": m["transcript_id"], "chance": m["transcript_id_chance"],
               "lip_env_corr": m["lip_env_corr"], "n": m["n_speech"], "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
