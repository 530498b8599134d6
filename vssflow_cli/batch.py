"""Running one job over many inputs: input lists, shards, output names, a summary and a report.

A failed input is recorded and the batch goes on; a model or usage error stops it (it would fail
every input the same way). Nothing here imports numpy or the model.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vssflow_cli.errors import (
    EXIT_FAILED_INPUTS,
    EXIT_INTERNAL,
    EXIT_OK,
    ModelError,
    OutputError,
    UsageError,
    VssflowError,
)

FATAL = (ModelError, UsageError)  # the same for every input: stop the batch
REPORT_FORMAT = "vssflow-report-1"
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
            continue
        assert it.output is not None
        out = Path(it.output)
        t0 = time.perf_counter()
        try:
            if out.exists() and skip_existing:
                it.status = "skipped"
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
