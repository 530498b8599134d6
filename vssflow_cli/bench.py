"""``vssflow bench``: real-time factor of a foley and a dub run, per-step DiT cost (ORT vs torch), CPU peak.

Numbers reported by :func:`run_bench` (see ``benchmarks/README.md``):

* ``rtf``: processing seconds / audio seconds of a full foley run on a generated clip
  (ffmpeg ``testsrc`` + ``sine``) through :func:`vssflow_cli.pipeline.foley` (decode, features,
  sampling, decode_audio = decoder + vocoder, mux), with the stage times in ``stages``;
* ``dub``, ``dub_fast`` (``--fast-teacher``): the same for a :func:`vssflow_cli.pipeline.dub` run (``rtf``,
  ``processing_s``, ``audio_s``,
  ``stages`` with ``features`` = lip tracking + visual features, ``teacher`` for models with a prior,
  ``segments``) on a talking clip made from the repository's ``examples/speaker.mp4`` (looped to the
  length, scaled to 640x360) and its script repeated once per loop; None, with a note, where the
  example is not there (an installed wheel). ``teacher_cache`` = {hits, misses}: sentences the teacher
  found in its cache of readings (repeated lines, earlier runs) vs read aloud (``VSSFLOW_NO_CACHE=1``: 0/0,
  every sentence read);
* ``step_ms_ort`` / ``step_ms_torch``: median time of ONE guided DiT step (cond + uncond = batch 2)
  at one window (T = ``window_frames``), same weights and inputs, after warm-up;
* ``step_gflop``: analytic FLOPs of that step; ``achieved_gflops`` = step_gflop / fastest step;
* ``matmul_gflops``: peak fp32 throughput, the fastest 1024x1024 numpy matmul of the same run;
  ``matmul_gflops_ort``: the same matmul through ONNX Runtime at the runtime's threads (CPU only,
  needs ``onnx``); ``share_of_peak`` = achieved_gflops / the higher of the two. All use the
  fastest run (best case vs best case), which other processes on a shared machine disturb
  least; step times are medians.

torch is imported only for ``step_ms_torch`` (lazily; None if torch or the bundle's checkpoint
is missing). :func:`vssflow_cli.train.untrained.random_bundle` builds an untrained bundle of any
config, so paper-scale speed can be measured before weights exist.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vssflow_cli.config import ModelConfig, random_inputs
from vssflow_cli.errors import UsageError

TIME_FREQ_DIM = 256  # must match vssflow_cli.model.dit.TIME_FREQ_DIM (checked by tests)


# --------------------------------------------------------------------------- analytic cost

def dit_step_flops(config: ModelConfig, T: int, batch: int = 2) -> int:
    """FLOPs of one DiT forward of ``batch`` windows of T frames (multiply-add = 2 FLOPs).

    Same count as ``vssflow_cli.model.dit.step_flops`` (which needs torch to import): every matrix
    product, elementwise work left out. batch=2 is one classifier-free-guided step.
    """
    c = config
    W, F_, Cc = c.width, c.ffn_hidden, c.cross_dim
    S = T + 1
    L = T + (1 if c.speaker_dim > 0 else 0)
    mm = T * c.in_channels * W + TIME_FREQ_DIM * W + W * W
    mm += T * (c.video_dim * Cc + Cc * Cc) + c.speaker_dim * Cc
    per_block = (
        S * W * 3 * W + 2 * S * S * W + S * W * W
        + S * W * W + L * Cc * 2 * W + 2 * S * L * W + S * W * W
        + S * W * 2 * F_ + S * F_ * W
    )
    mm += c.depth * per_block + T * W * c.latent_channels
    return 2 * mm * batch


def matmul_fn(n: int = 1024) -> tuple[Callable[[], None], int]:
    """An fp32 (n x n) @ (n x n) numpy matmul and its FLOPs (2 n^3)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)

    def mm() -> None:
        np.matmul(a, b, out=out)

    return mm, 2 * n**3


def ort_matmul_fn(n: int = 1024, threads: int = 1) -> tuple[Callable[[], None], int] | None:
    """The same matmul as a one-node ONNX Runtime graph (MLAS kernels, like the DiT's), or None.

    Runs on the kernels and thread count the DiT uses (numpy's OpenBLAS always uses all cores).
    Building the graph needs the ``onnx`` package (train extras); without it only numpy's
    number is reported.
    """
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    b = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])], [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = {"a": rng.standard_normal((n, n), dtype=np.float32)}

    def mm() -> None:
        sess.run(["c"], a)

    return mm, 2 * n**3


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """fp32 matmul throughput in GFLOP/s with numpy's BLAS (median of ``repeats``)."""
    fn, flop = matmul_fn(n)
    return flop / min(timed_blocks({"mm": fn}, repeats, warmup=2)["mm"]) / 1e6


def timed_blocks(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 3, rounds: int = 3
) -> dict[str, list[float]]:
    """Times in ms of every timed call per function, measured in alternating blocks.

    Each round runs every function in its own block (one warm-up call, then its share of
    ``repeats``), so slow drift in machine load (other processes) hits all of them alike, while
    thread pools of different libraries (ORT's spinning workers, OpenMP, BLAS) do not interleave
    call by call. ``warmup`` calls per function come first.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per = max(1, math.ceil(repeats / rounds))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            for _ in range(per):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: [1000.0 * s for s in v] for k, v in times.items()}


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------- inputs

def step_inputs(config: ModelConfig, T: int, batch: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Random x (B,T,C), t (B,), conds of one guided step; the second half is the zeroed branch."""
    rng = np.random.default_rng(seed)
    half = max(1, batch // 2)
    conds = random_inputs(config, half, T, rng)
    if batch > half:
        conds = {k: np.concatenate([v, np.zeros_like(v)], axis=0)[:batch] for k, v in conds.items()}
    x = rng.standard_normal((batch, T, config.latent_channels), dtype=np.float32)
    t = np.full((batch,), 0.5, dtype=np.float32)
    return x, t, conds


def _ffmpeg(args: list[str], what: str) -> None:
    import imageio_ffmpeg

    argv = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not make the {what}: {proc.stderr.strip()[-300:]}")


def make_clip(path: str | os.PathLike, seconds: float, fps: int = 25, size: str = "320x240") -> Path:
    """A test video: ffmpeg lavfi ``testsrc`` (moving pattern) + a 440 Hz ``sine``, H.264/AAC."""
    path = Path(path)
    _ffmpeg([
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}:duration={seconds:g}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds:g}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
        str(path),
    ], "bench clip")  # fmt: skip
    return path


EXAMPLE_SPEAKER = Path(__file__).resolve().parent.parent / "examples" / "speaker.mp4"  # source checkout only


# lines of the example's length (~3 s), spoken over the example's later loops in the dub bench
OTHER_LINES = ("Please hang up and dial the number again.", "The person you are calling is not available now.")


def make_talking_clip(
    path: str | os.PathLike, seconds: float, size: str = "640x360", source: Path = EXAMPLE_SPEAKER
) -> tuple[Path, Path]:
    """A talking-face video of ``seconds`` (``source`` looped, scaled to ``size``, 25 fps, no sound) and a
    script beside it: ``source``'s ``.txt``, then :data:`OTHER_LINES`, one line per loop (different lines, so the
    teacher reads each: a repeated line would be read once). FileNotFoundError if ``source`` is missing."""
    from vssflow_cli.media import probe

    script_src = source.with_suffix(".txt")
    if not (source.is_file() and script_src.is_file()):
        raise FileNotFoundError(f"{source} (and its .txt) not found: the dub bench needs a source checkout")
    path = Path(path)
    w, h = size.split("x")
    _ffmpeg(["-stream_loop", "-1", "-i", str(source), "-t", f"{seconds:g}", "-vf", f"fps=25,scale={w}:{h}",
             "-an", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], "talking clip")
    loops = max(1, math.ceil(seconds / probe(source).duration))
    script = path.with_suffix(".txt")
    lines = [script_src.read_text(encoding="utf-8").strip(), *OTHER_LINES]
    script.write_text("\n".join(lines[k % len(lines)] for k in range(loops)) + "\n", encoding="utf-8")
    return path, script


# --------------------------------------------------------------------------- step timings

def ort_step_fn(synth, T: int) -> Callable[[], np.ndarray]:
    """One guided step (batch 2, T frames) through ONNX Runtime."""
    x, t, conds = step_inputs(synth.config, T)
    return lambda: synth.velocity(x, t, conds)


def torch_step_fn(manifest, T: int) -> tuple[Callable[[], Any] | None, str]:
    """The same step in torch eager (CPU), rebuilt from the bundle's checkpoint: (fn or None, note).

    Imports torch here only; the caller sets torch's thread count.
    """
    if not manifest.has("checkpoint"):
        return None, "bundle ships no checkpoint: torch step not measured"
    try:
        import torch

        from vssflow_cli.model.checkpoint import load_checkpoint
    except ImportError as e:
        return None, f"torch not installed ({e.name}): torch step not measured"
    model = load_checkpoint(manifest.path("checkpoint")).model.eval()
    x, t, conds = step_inputs(manifest.config, T)
    args = {k: torch.from_numpy(v) for k, v in conds.items()}
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)

    def step() -> None:
        with torch.inference_mode():
            model(xt, tt, **args)

    return step, ""


def step_timings(
    synth, T: int, *, repeats: int = 10, warmup: int = 3, torch_compare: bool = True, fp32_synth=None
) -> dict[str, Any]:
    """Medians step_ms_ort, step_ms_torch (or None); best_ms_ort; matmul GFLOP/s (fastest runs).

    ``fp32_synth``: a second synthesizer on the float32 graph (when ``synth`` runs int8), timed in the same
    interleaved blocks as ``step_ms_ort_fp32`` / ``best_ms_ort_fp32``.
    """
    fns: dict[str, Callable[[], Any]] = {"ort": ort_step_fn(synth, T)}
    if fp32_synth is not None:
        fns["ort_fp32"] = ort_step_fn(fp32_synth, T)
    mm, mm_flop = matmul_fn()
    fns["matmul"] = mm
    ort_mm = ort_matmul_fn(threads=synth.threads) if synth.device_used == "cpu" else None
    if ort_mm is not None:
        fns["matmul_ort"] = ort_mm[0]
    note = "torch comparison skipped"
    torch_mod = None
    if torch_compare:
        step, note = torch_step_fn(synth.manifest, T)
        if step is not None:
            import torch as torch_mod

            fns["torch"] = step
    prev = torch_mod.get_num_threads() if torch_mod else 0
    if torch_mod:
        torch_mod.set_num_threads(synth.threads)  # same thread budget as ORT
    try:
        ms = timed_blocks(fns, repeats, warmup)
    finally:
        if torch_mod:
            torch_mod.set_num_threads(prev)
    return {
        "step_ms_ort": statistics.median(ms["ort"]),
        "best_ms_ort": min(ms["ort"]),
        "step_ms_torch": statistics.median(ms["torch"]) if "torch" in ms else None,
        "step_ms_ort_fp32": statistics.median(ms["ort_fp32"]) if "ort_fp32" in ms else None,
        "best_ms_ort_fp32": min(ms["ort_fp32"]) if "ort_fp32" in ms else None,
        "matmul_gflops": mm_flop / min(ms["matmul"]) / 1e6,
        "matmul_gflops_ort": mm_flop / min(ms["matmul_ort"]) / 1e6 if "matmul_ort" in ms else None,
        "note": note,
    }


# --------------------------------------------------------------------------- foley run

def foley_run(synth, clip: Path, out: Path, steps: int | None, device: str) -> tuple[dict[str, float], float, float]:
    """A full ``vssflow foley`` job through the pipeline; returns (stages, wall s, audio s)."""
    from vssflow_cli.pipeline import JobOptions, foley

    opts = JobOptions(steps=steps, device=device, overwrite=True, mix="replace")
    t0 = time.perf_counter()
    result = foley(clip, out, opts, synth)
    wall = time.perf_counter() - t0
    return dict(result.stages), wall, float(result.duration)


def dub_row(
    synth, tmp: Path, seconds: float, steps: int | None, device: str, fast_teacher: bool = False
) -> tuple[dict[str, Any] | None, str]:
    """A full ``vssflow dub`` job on :func:`make_talking_clip`: (row, "") or (None, why not)."""
    from vssflow_cli.pipeline import JobOptions, dub

    try:
        clip, script = make_talking_clip(tmp / "talking.mp4", seconds, source=EXAMPLE_SPEAKER)
    except FileNotFoundError as e:
        return None, f"dub not measured: {e}"
    opts = JobOptions(steps=steps, device=device, overwrite=True, mix="replace", fast_teacher=fast_teacher)
    before = _teacher_cache_counts()
    t0 = time.perf_counter()
    result = dub(clip, tmp / "dub.mp4", script, opts, synth)
    wall = time.perf_counter() - t0
    after = _teacher_cache_counts()
    audio_s = float(result.duration)
    return {
        "rtf": wall / audio_s if audio_s > 0 else math.inf,
        "processing_s": round(wall, 3),
        "audio_s": round(audio_s, 3),
        "stages": {k: round(v, 4) for k, v in result.stages.items()},
        "segments": result.segments,
        "teacher_cache": {"hits": after[0] - before[0], "misses": after[1] - before[1]},
        "clip": f"{EXAMPLE_SPEAKER.name} looped to {seconds:g} s, 640x360",
    }, ""


def _teacher_cache_counts() -> tuple[int, int]:
    """(hits, misses) of the process's teacher so far; (0, 0) before it is loaded (loading it is the dub's)."""
    from vssflow_cli.teacher import get_teacher

    if get_teacher.cache_info().currsize == 0:
        return 0, 0
    t = get_teacher()
    return t.cache_hits, t.cache_misses


def run_bench(
    model: str | os.PathLike | None = None,
    seconds: float = 10.0,
    device: str = "auto",
    steps: int | None = None,
    *,
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 3,
    torch_compare: bool = True,
    precision: str = "auto",
    dub: bool = True,
) -> dict[str, Any]:
    """Benchmark a bundle (``--model`` value, default the embedded one); returns a JSON-able dict.

    Keys: rtf, seconds, processing_s, stages {name: s}, steps, nfe, T, precision, step_ms_ort, best_ms_ort,
    step_ms_torch (None if not measurable), speedup_vs_torch, step_ms_ort_fp32 / speedup_fp32_vs_torch (the float32
    graph; equal to step_ms_ort when that is what runs), step_gflop, achieved_gflops (of the float32 graph),
    matmul_gflops, matmul_gflops_ort, share_of_peak, device, threads, model, loadavg_1m (before, after), notes,
    versions, dub ({rtf, processing_s, audio_s, stages, segments, clip} or None; ``dub=False`` skips it).
    ``step_ms_ort`` and ``rtf`` are what a user gets: the graph ``precision`` selects (int8 on CPU when the bundle
    ships one).
    """
    import onnxruntime as ort

    from vssflow_cli.models import resolve_model
    from vssflow_cli.runtime import Synthesizer

    if seconds <= 0:
        raise UsageError(f"--seconds must be > 0, got {seconds}; try --seconds 10")
    load_before = _loadavg()
    synth = Synthesizer(resolve_model(model), device=device, threads=threads, precision=precision)
    fp32 = None
    if synth.precision == "int8":
        fp32 = Synthesizer(synth.manifest, device=device, threads=threads, precision="fp32")
    cfg = synth.config
    T = cfg.window_frames
    notes: list[str] = [synth.device_note] if synth.device_note else []

    timing = step_timings(synth, T, repeats=repeats, warmup=warmup, torch_compare=torch_compare, fp32_synth=fp32)
    step_ort, step_torch, peak = timing["step_ms_ort"], timing["step_ms_torch"], timing["matmul_gflops"]
    step_fp32 = timing["step_ms_ort_fp32"] or step_ort
    best_fp32 = timing["best_ms_ort_fp32"] or timing["best_ms_ort"]
    if timing["note"]:
        notes.append(timing["note"])

    with tempfile.TemporaryDirectory(prefix="vssflow-bench-") as tmp:
        clip = make_clip(Path(tmp) / "bench.mp4", seconds)
        stages, processing, audio_s = foley_run(synth, clip, Path(tmp) / "out.mp4", steps, device)
        dub_res, note = dub_row(synth, Path(tmp), seconds, steps, device) if dub else (None, "dub skipped")
        fast_res, _ = dub_row(synth, Path(tmp), seconds, steps, device, fast_teacher=True) if dub else (None, "")
    if note:
        notes.append(note)

    gflop = dit_step_flops(cfg, T, batch=2) / 1e9
    achieved = gflop / (best_fp32 / 1000.0)
    best_peak = max(p for p in (peak, timing["matmul_gflops_ort"]) if p is not None)
    versions = {"onnxruntime": ort.__version__, "numpy": np.__version__, "python": platform.python_version()}
    import importlib.metadata as md

    try:
        versions["torch"] = md.version("torch")
    except md.PackageNotFoundError:  # torch is optional at inference
        versions["torch"] = None
    return {
        "model": synth.manifest.name,
        "config": cfg.name,
        "device": synth.device_used,
        "threads": synth.threads,
        "seconds": float(seconds),
        "audio_s": round(audio_s, 3),
        "processing_s": round(processing, 3),
        "rtf": processing / audio_s if audio_s > 0 else math.inf,
        "stages": {k: round(v, 4) for k, v in stages.items()},
        "dub": dub_res,
        "dub_fast": fast_res,
        "steps": int(steps if steps is not None else synth.manifest.sampler.steps),
        "solver": synth.manifest.sampler.solver,
        "nfe": synth.last_nfe,
        "T": T,
        "precision": synth.precision,
        "step_ms_ort": round(step_ort, 3),
        "best_ms_ort": round(timing["best_ms_ort"], 3),
        "step_ms_torch": None if step_torch is None else round(step_torch, 3),
        "speedup_vs_torch": None if step_torch is None else round(step_torch / step_ort, 3),
        "step_ms_ort_fp32": round(step_fp32, 3),
        "best_ms_ort_fp32": round(best_fp32, 3),
        "speedup_fp32_vs_torch": None if step_torch is None else round(step_torch / step_fp32, 3),
        "step_gflop": round(gflop, 4),
        "achieved_gflops": round(achieved, 2),
        "matmul_gflops": round(peak, 2),
        "matmul_gflops_ort": None if timing["matmul_gflops_ort"] is None else round(timing["matmul_gflops_ort"], 2),
        "share_of_peak": round(achieved / best_peak, 4),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m": [load_before, _loadavg()],  # other processes' load before/after: noisy if high
        "notes": notes,
        "versions": versions,
    }
