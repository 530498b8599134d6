"""What the CLI shows: each input's outcome line, errors and warnings, and on a terminal per-stage progress bars
(with the time left where a stage knows its total) and the batch summary table (rich, on stderr)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vssflow_cli.batch import BatchReport, Item


def stderr_console() -> Any:
    """A rich console on stderr (stdout stays for results and --json lines)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


class StageProgress:
    """Rich progress bars for the pipeline's stages, on stderr, only on a terminal."""

    LABELS = {"transcribe": "transcribe", "decode": "decode video", "features": "features",
              "sampling": "sampling", "decode_audio": "decode audio", "mux": "mux"}  # fmt: skip

    def __init__(self, console: Any, name: str) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.name = name
        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
            _time_left_column(), console=console, transient=True,
        )  # fmt: skip
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> StageProgress:
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


def _time_left_column() -> Any:
    from rich.progress import TimeRemainingColumn
    from rich.text import Text

    class TimeLeft(TimeRemainingColumn):
        """``0:01:10 left``, for a stage whose total is known, once its speed is; nothing otherwise."""

        def render(self, task: Any) -> Text:
            if task.total is None or task.finished or task.time_remaining is None:
                return Text("")
            return Text(f"{super().render(task).plain} left", style="progress.remaining")

    return TimeLeft()


def one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def print_error(msg: str) -> None:
    """``vssflow: error: ...``, one line on stderr."""
    sys.stderr.write(f"vssflow: error: {one_line(msg)}\n")
    sys.stderr.flush()


def warnings_of(it: Item) -> list[str]:
    """The warnings of a finished item's result (subtitle streams left out, a script line too fast, ...)."""
    return [one_line(w) for w in (it.result or {}).get("warnings") or ()]


def print_warnings(it: Item) -> None:
    """``vssflow: warning: ...`` on stderr, one line per warning (``--json`` carries them too, under ``warnings``)."""
    for w in warnings_of(it):
        sys.stderr.write(f"vssflow: warning: {w}\n")
    sys.stderr.flush()


def result_line(it: Item) -> str:
    """The line for an input done: where the output went, the timing, its audio tracks when there are several."""
    r = it.result or {}
    tracks = r.get("audio_tracks") or ()
    where = ""
    if len(tracks) > 1:
        where = "; audio " + ", ".join(f"{i} {t}{' (default)' if i == 1 else ''}" for i, t in enumerate(tracks, 1))
    rtf = r["wall"] / r["duration"] if r["duration"] > 0 else 0.0
    return (f"{it.input} -> {it.output} ({r['duration']:.1f} s of video in {r['wall']:.1f} s, {rtf:.2f}× real "
            f"time){where}")  # fmt: skip


def print_outcome(it: Item, as_json: bool) -> None:
    """An input done: its warnings, then its JSON line, or its result or skip line on stdout, or its error."""
    print_warnings(it)
    if as_json:
        print(it.to_json(), flush=True)
    elif it.status == "ok" and it.result:
        print(result_line(it), flush=True)
    elif it.status == "skipped":
        print(f"{it.input}: skipped, {it.note}", flush=True)
    if it.status == "failed":
        print_error(it.error or "failed")


def print_summary(report: BatchReport, console: Any) -> None:
    from rich.table import Table

    title = (f"vssflow {report.command}: {report.count('ok')} ok, {report.count('failed')} failed, "
             f"{report.count('skipped')} skipped")  # fmt: skip
    if report.count("pending"):
        title += f", {report.count('pending')} not run"
    n_warnings = sum(len(warnings_of(it)) for it in report.items)
    if n_warnings:
        title += f", {n_warnings} warning{'s' if n_warnings > 1 else ''} (printed above)"
    table = Table(title=title + (" (interrupted)" if report.interrupted else ""), title_justify="left")
    for col in ("input", "status", "output / error", "s"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "failed": "red", "skipped": "yellow", "pending": "dim"}
    for it in report.items:
        detail = it.error if it.status == "failed" else it.note if it.status == "skipped" else it.output
        status = "not run" if it.status == "pending" else it.status
        table.add_row(it.input, f"[{style[it.status]}]{status}[/]", detail or "", f"{it.seconds:.1f}")
    console.print(table)
