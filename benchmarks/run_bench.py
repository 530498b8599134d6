#!/usr/bin/env python
"""Benchmarks CI does not run: RTF of a foley run, ORT vs torch per step, ORT thread settings.

    python benchmarks/run_bench.py                          # embedded model, 10 s clip
    python benchmarks/run_bench.py --random tiny --threads 1,2 --ort-sweep
    python benchmarks/run_bench.py --random paper --seconds 10 --steps 4   # slow on CPU; GPU box
    python benchmarks/run_bench.py --model DIR --json results.json

``--random CONFIG`` builds an untrained bundle of that preset (needs torch + onnx), so shapes can
be timed without trained weights. See benchmarks/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from vssflow_cli import bench
from vssflow_cli.config import PRESETS


def ort_sweep(bundle: Path, threads: list[int], repeats: int) -> list[dict]:
    """Raw ORT DiT step (batch 2, one window) for intra-op threads x spinning x optimisation level."""
    import onnxruntime as ort

    from vssflow_cli.bundle import load_manifest

    m = load_manifest(bundle)
    x, t, conds = bench.step_inputs(m.config, m.config.window_frames)
    feed = {"x": x, "t": t, **conds}
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
    fns, rows = {}, {}
    for n in threads:
        for spin in ("1", "0"):
            for level_name, level in levels.items():
                o = ort.SessionOptions()
                o.intra_op_num_threads, o.inter_op_num_threads = n, 1
                o.graph_optimization_level = level
                o.add_session_config_entry("session.intra_op.allow_spinning", spin)
                sess = ort.InferenceSession(str(m.path("dit")), o, providers=["CPUExecutionProvider"])
                key = f"threads={n} spin={spin} opt={level_name}"
                fns[key] = (lambda s=sess: s.run(["v"], feed))
                rows[key] = {"threads": n, "allow_spinning": spin == "1", "opt": level_name}
    ms = bench.timed_blocks(fns, repeats, warmup=3)
    return [{**rows[k], "step_ms": round(statistics.median(v), 2), "best_ms": round(min(v), 2)}
            for k, v in ms.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="bundle folder / registry name (default: embedded vssflow-tiny)")
    ap.add_argument("--random", choices=sorted(PRESETS), help="time an untrained bundle of this preset")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", default="", help="comma list of intra-op thread counts to try, e.g. 1,2")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--ort-sweep", action="store_true", help="also sweep raw ORT session settings")
    ap.add_argument("--json", type=Path, help="write all results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vssflow-bench-bundle-") as tmp:
        model = args.model
        if args.random:
            from vssflow_cli.train.untrained import random_bundle

            model = str(random_bundle(Path(tmp) / args.random, PRESETS[args.random]()))
        threads = [int(s) for s in args.threads.split(",") if s.strip()] or [None]
        results: dict = {"runs": []}
        for n in threads:
            r = bench.run_bench(model, seconds=args.seconds, device=args.device, steps=args.steps,
                                threads=n, repeats=args.repeats)
            results["runs"].append(r)
            torch_ms = "n/a" if r["step_ms_torch"] is None else f"{r['step_ms_torch']:.1f} ms"
            print(f"threads={r['threads']} device={r['device']}: RTF {r['rtf']:.3f} "
                  f"({r['processing_s']:.2f} s for {r['audio_s']:.1f} s, stages {r['stages']}); "
                  f"step ORT {r['step_ms_ort']:.1f} ms, torch {torch_ms}; "
                  f"{r['achieved_gflops']:.1f} GFLOP/s = {100 * r['share_of_peak']:.0f}% of matmul peak "
                  f"(numpy {r['matmul_gflops']:.1f}, ORT {r['matmul_gflops_ort']}); load {r['loadavg_1m']}")
        if args.ort_sweep:
            from vssflow_cli.models import resolve_model

            sweep_threads = [n for n in threads if n] or [1, 2]
            results["ort_sweep"] = ort_sweep(resolve_model(model), sweep_threads, args.repeats)
            for row in results["ort_sweep"]:
                print("ort", row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
