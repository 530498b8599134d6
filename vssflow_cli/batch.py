"""Running one job over many inputs: input lists, shards, output names, a summary and a report.

:func:`plan` turns a :class:`Request` (what ``vssflow foley`` / ``dub`` were given) into a
:class:`BatchReport` of pending items; :func:`run_task` runs them with one model, loaded lazily by
the first job. A failed input is recorded and the batch goes on; a model or usage error stops it
(it would fail every input the same way). Nothing here imports numpy or the model at import time.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vssflow_cli.errors import (
    EXIT_FAILED_INPUTS,
    EXIT_INTERNAL,
    EXIT_OK,
    ModelError,
    OutputError,
    UsageError,
    VssflowError,
)

if TYPE_CHECKING:
    from vssflow_cli.pipeline import JobOptions, Progress, Result

FATAL = (ModelError, UsageError)  # the same for every input: stop the batch
REPORT_FORMAT = "vssflow-report-1"
_FLAG_VALUES = {"true", "false", "yes", "no", "on", "off", "1", "0"}
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".flv", ".3gp", ".ogv")


def read_list(path: str | os.PathLike[str]) -> list[str]:
    """Input paths from a list file: one per line; blank lines and lines starting with '#' skipped.

    Relative paths are taken relative to the list file's folder.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--from-list {p}: cannot read it ({e}); pass a UTF-8 text file, one video per line") from e
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(s if os.path.isabs(s) else str(p.parent / s))
    return out


def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N."""
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise UsageError(f"--shard {spec!r}: expected I/N, e.g. --shard 2/8") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {spec!r}: need 1 <= I <= N, e.g. --shard 1/{max(n, 1)}")
    return i, n


def select_shard(items: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """Items whose position p (0-based, in the given order) has p % N == I - 1: disjoint, complete."""
    if shard is None:
        return list(items)
    i, n = shard
    return [x for p, x in enumerate(items) if p % n == i - 1]


def dedupe(items: Iterable[str]) -> list[str]:
    """Drop repeated inputs (same resolved path), keeping the first occurrence's order."""
    seen, out = set(), []
    for x in items:
        key = os.path.realpath(x)
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


def default_output(video: str | os.PathLike[str], task: str, *, out_dir: Path | None, wav: bool) -> Path:
    """``clip.mp4`` -> ``clip.<task>.mp4`` (or ``.wav``) beside the input or in ``out_dir``.

    Containers vssflow cannot remux into keep their name with ``.mkv`` (Matroska takes any codec).
    """
    v = Path(video)
    ext = ".wav" if wav else (v.suffix.lower() if v.suffix.lower() in VIDEO_EXTS else ".mkv")
    name = f"{v.stem}.{task}{ext}"
    return (out_dir / name) if out_dir is not None else v.with_name(name)


@dataclass
class Item:
    """One input's outcome in a batch."""

    input: str
    output: str | None
    status: str = "pending"  # ok | failed | skipped
    error: str | None = None
    exit_code: int = EXIT_OK
    seconds: float = 0.0
    result: dict[str, Any] | None = None
    note: str | None = None  # why it was skipped

    def to_json(self) -> str:
        """One JSON line: the job's result fields plus the item's status, paths, error and timing."""
        d: dict[str, Any] = dict(self.result or {})
        d.update(status=self.status, input=self.input, output=self.output, error=self.error,
                 exit_code=self.exit_code, seconds=self.seconds, note=self.note)  # fmt: skip
        return json.dumps(d, ensure_ascii=False)


@dataclass
class BatchReport:
    command: str
    items: list[Item] = field(default_factory=list)
    interrupted: bool = False
    stopped: str | None = None  # fatal error that stopped the batch

    def count(self, status: str) -> int:
        return sum(1 for it in self.items if it.status == status)

    @property
    def exit_code(self) -> int:
        failed = [it for it in self.items if it.status == "failed"]
        if not failed:
            return EXIT_OK
        if len(self.items) == 1:
            return failed[0].exit_code
        return EXIT_FAILED_INPUTS

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "command": self.command,
            "total": len(self.items),
            "ok": self.count("ok"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "not_run": self.count("pending"),
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "exit_code": self.exit_code,
            "items": [asdict(it) for it in self.items],
        }


def write_report(path: str | os.PathLike[str], report: BatchReport) -> None:
    """Write the JSON report atomically (temp file + rename)."""
    from vssflow_cli.output import atomic_output

    p = Path(path)
    with atomic_output(p) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def internal_message(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    what = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return f"internal error ({what}); please report it, and rerun with VSSFLOW_DEBUG=1 for the traceback"


def run_batch(
    report: BatchReport,
    job: Callable[[Path, Path], Any],
    *,
    skip_existing: bool,
    overwrite: bool,
    on_done: Callable[[Item], None] | None = None,
) -> BatchReport:
    """Run ``job(input, output)`` for each pending item of ``report``, recording outcomes.

    ``job`` returns an object with ``to_dict()`` (a pipeline Result). VssflowErrors and
    unexpected exceptions fail that input only; ModelError/UsageError stop the batch (re-raised).
    Interrupts (KeyboardInterrupt, signals) propagate after marking the report interrupted.
    """
    debug = bool(os.environ.get("VSSFLOW_DEBUG"))
    for it in report.items:
        if it.status != "pending":
            if it.status == "skipped" and on_done is not None:  # skipped when planned (a vssflow output)
                on_done(it)
            continue
        assert it.output is not None
        out = Path(it.output)
        t0 = time.perf_counter()
        try:
            if out.exists() and skip_existing:
                it.status, it.note = "skipped", f"{out} exists"
            elif out.exists() and not overwrite:
                raise OutputError(f"{out}: already exists; pass --overwrite to replace it or --skip-existing")
            else:
                res = job(Path(it.input), out)
                it.status, it.result = "ok", res.to_dict()
        except FATAL as e:
            it.status, it.error, it.exit_code = "failed", str(e), e.exit_code
            report.stopped = str(e)
            raise
        except VssflowError as e:
            it.status, it.error, it.exit_code = "failed", str(e), e.exit_code
        except Exception as e:  # a bug: record it, keep going with the other inputs
            if debug:
                traceback.print_exc()
            it.status, it.error, it.exit_code = "failed", internal_message(e), EXIT_INTERNAL
        except BaseException:
            report.interrupted = True
            raise
        finally:
            it.seconds = round(time.perf_counter() - t0, 4)
        if on_done is not None:
            on_done(it)
    return report


@dataclass(frozen=True)
class Request:
    """What a foley/dub command line asks for (before inputs and outputs are resolved)."""

    task: str  # "foley" | "dub"
    videos: tuple[str, ...] = ()
    from_list: Path | None = None
    output: Path | None = None
    out_dir: Path | None = None
    wav: bool = False
    shard: str | None = None
    report: Path | None = None
    skip_existing: bool = False
    force: bool = False  # also process inputs that are vssflow outputs


def skip_own_outputs(items: Sequence[Item]) -> None:
    """Mark inputs that vssflow wrote (tagged by its mux, :func:`vssflow_cli.media.vssflow_mark`) skipped, so
    re-running over a folder never processes its own outputs (``clip.foley.foley.mp4``)."""
    from vssflow_cli.media import vssflow_mark

    for it in items:
        mark = vssflow_mark(it.input)
        if mark is not None:
            it.status, it.output = "skipped", None  # nothing is written for it
            it.note = f"already a {mark} output; pass --force to process it again"


def plan_outputs(
    task: str, videos: Sequence[str], output: Path | None, out_dir: Path | None, wav: bool
) -> tuple[list[str], bool]:
    """Output path per input (validated suffixes) and whether only audio is written."""
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


def plan(req: Request) -> tuple[BatchReport, bool]:
    """Inputs (arguments + list file, deduplicated, sharded) -> a report of pending items, and wav-only."""
    inputs = list(req.videos)
    if req.from_list is not None:
        inputs += read_list(req.from_list)
    if not inputs:
        raise UsageError(f"no input videos; pass VIDEO... or --from-list FILE (see `vssflow {req.task} --help`)")
    inputs = select_shard(dedupe(inputs), parse_shard(req.shard) if req.shard else None)
    for x in inputs:  # `--wav true`: the flag took no value, so `true` reads as a video
        if x.lower() in _FLAG_VALUES and not os.path.lexists(x):
            raise UsageError(f"{x!r} is not a file, and flags such as --wav take no value; drop {x!r}")
    if req.report is not None and not req.report.parent.is_dir():
        raise OutputError(f"--report {req.report}: folder {req.report.parent} does not exist; create it first")
    outs, wav_only = plan_outputs(req.task, inputs, req.output, req.out_dir, req.wav)
    items = [Item(i, o) for i, o in zip(inputs, outs, strict=True)]
    if not req.force:
        skip_own_outputs(items)
    check_collisions([it for it in items if it.status == "pending"])  # a skipped input is never read
    return BatchReport(req.task, items), wav_only


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_collisions(items: Sequence[Item]) -> None:
    """UsageError, before any work, if two inputs would write one output or an output is another input.

    Paths are compared resolved (symlinks, ``..``) and, where they exist, as files (hard links). An
    output that is its own input is left to :func:`vssflow_cli.output.check_output_path` (that input fails).
    """
    writers: dict[str, Item] = {}
    for it in items:
        assert it.output is not None
        other = writers.setdefault(os.path.realpath(it.output), it)
        if other is not it:
            raise UsageError(f"{other.input} and {it.input} would both write {it.output}; "
                             "use -o per file or separate --out-dir folders")  # fmt: skip
    inputs: dict[object, Item] = {os.path.realpath(it.input): it for it in items}
    inputs.update({fid: it for it in items if (fid := _file_id(it.input)) is not None})
    for it in items:
        assert it.output is not None
        fid = _file_id(it.output)
        reader = inputs.get(os.path.realpath(it.output)) or (inputs.get(fid) if fid is not None else None)
        if reader is not None and reader is not it:
            raise UsageError(f"{it.input} would write {it.output}, which is also an input of this batch; "
                             "drop it from the inputs or write elsewhere with --out-dir")  # fmt: skip


RunOne = Callable[[Path, Path, "JobOptions", Any, "Progress | None"], "Result"]


def run_task(
    req: Request,
    report: BatchReport,
    opts: JobOptions,
    run_one: RunOne,
    *,
    progress: Callable[[str], AbstractContextManager[Progress]] | None = None,
    on_done: Callable[[Item], None] | None = None,
) -> BatchReport:
    """Run ``run_one(video, out, opts, synth, progress)`` for every pending item with one model.

    The model is loaded by the first job that runs (a batch of skipped items loads none).
    ``progress(name)``: a context manager giving the per-stage progress callback for one input.
    The JSON report (``req.report``) is written however the batch ends.
    """
    from vssflow_cli.signals import Interrupted

    synth = None

    def job(video: Path, out: Path) -> Any:
        nonlocal synth
        if synth is None:
            from vssflow_cli.pipeline import load_synthesizer

            synth = load_synthesizer(opts)
        if progress is None:
            return run_one(video, out, opts, synth, None)
        with progress(video.name) as callback:
            return run_one(video, out, opts, synth, callback)

    try:
        return run_batch(report, job, skip_existing=req.skip_existing, overwrite=opts.overwrite, on_done=on_done)
    except Interrupted:
        report.interrupted = True
        raise
    finally:
        if req.report is not None:
            write_report(req.report, report)
