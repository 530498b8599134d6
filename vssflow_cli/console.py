"""What the CLI shows on a terminal: per-stage progress bars and the batch summary table (rich, on stderr)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vssflow_cli.batch import BatchReport


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
            console=console, transient=True,
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


def print_summary(report: BatchReport, console: Any) -> None:
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
