"""The one atomic-write helper: short temp names, the name limit, and never replacing a file made meanwhile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vssflow_cli import output
from vssflow_cli.errors import OutputError


def test_temp_name_is_short_and_keeps_the_extension(tmp_path: Path) -> None:
    final = tmp_path / "clip.foley.mp4"
    tmp = output.temp_path_for(final)
    assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name.startswith(".clip.foley.")
    assert len(tmp.name) - len(final.name) == 8


def test_longest_legal_name_can_be_written(tmp_path: Path) -> None:
    name = "é" * 100 + "x" * 45 + ".foley.mp4"  # 255 bytes in UTF-8: the longest legal name
    assert len(os.fsencode(name)) == output.NAME_MAX
    final = tmp_path / name
    assert len(os.fsencode(output.temp_path_for(final).name)) <= output.NAME_MAX
    with output.atomic_output(final) as tmp:
        tmp.write_bytes(b"done")
    assert final.read_bytes() == b"done" and os.listdir(tmp_path) == [name]


def test_no_overwrite_keeps_a_file_created_while_writing(tmp_path: Path) -> None:
    final = tmp_path / "out.wav"
    with pytest.raises(OutputError, match="created by something else .* kept it"):
        with output.atomic_output(final, overwrite=False) as tmp:
            tmp.write_bytes(b"ours")
            final.write_bytes(b"theirs")  # another process wins the race
    assert final.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["out.wav"]
    final.unlink()
    with output.atomic_output(final, overwrite=False) as tmp:
        tmp.write_bytes(b"ours")
    assert final.read_bytes() == b"ours" and os.listdir(tmp_path) == ["out.wav"]
    with output.atomic_output(final) as tmp:  # overwrite (the default) replaces
        tmp.write_bytes(b"again")
    assert final.read_bytes() == b"again" and not output.live_temp_files()


def test_a_full_disk_while_writing_is_an_output_error(tmp_path: Path) -> None:
    """Issue 13.6 without root (the real full disk is test_reliability's tmpfs): ENOSPC from the writer names
    the destination and leaves nothing; other OS errors are not disguised."""
    import errno

    final = tmp_path / "report.json"
    with pytest.raises(OutputError, match=f"{final}: cannot write: no space left on device; free some space"):
        with output.atomic_output(final) as tmp:
            tmp.write_bytes(b"{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(PermissionError):
        with output.atomic_output(final):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    assert os.listdir(tmp_path) == [] and not output.live_temp_files()


def test_copy_and_text_are_atomic(tmp_path: Path) -> None:
    src = output.write_text(tmp_path / "a.json", "{}\n")
    assert output.copy_file(src, tmp_path / "b.json").read_text() == "{}\n"
    assert output.copy_file(src, src) == src
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json"]


@pytest.mark.parametrize("name, flags", [("o.mp4", []), ("o.wav", ["--wav"])])
def test_a_run_never_replaces_an_output_made_while_it_ran(
    name: str, flags: list[str], tmp_path: Path, clip_short: Path, test_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13.4: a second run with the same ``-o`` (simulated: the file appears just before our output is
    published) fails with exit 5 naming the path, keeps the other run's file and leaves no temp file; with
    --overwrite it is replaced."""
    import contextlib
    import io

    from vssflow_cli import cli
    from vssflow_cli.errors import EXIT_OUTPUT

    monkeypatch.setenv("VSSFLOW_MODEL", str(test_bundle))
    monkeypatch.setenv("VSSFLOW_NO_PROGRESS", "1")
    out = tmp_path / name
    publish = output._publish

    def other_run_wins(tmp: Path, final: Path, overwrite: bool) -> None:
        if final == out:
            final.write_bytes(b"the other run's output")
        publish(tmp, final, overwrite)

    monkeypatch.setattr(output, "_publish", other_run_wins)
    args = ["foley", str(clip_short), "-o", str(out), "--steps", "1", *flags]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.run(args)
    assert code == EXIT_OUTPUT, err.getvalue()
    assert f"{out}: was created by something else" in err.getvalue() and "--overwrite" in err.getvalue()
    assert out.read_bytes() == b"the other run's output" and os.listdir(tmp_path) == [name]
    assert not output.live_temp_files()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert cli.run([*args, "--overwrite"]) == 0, err.getvalue()
    assert out.stat().st_size > 1000 and os.listdir(tmp_path) == [name]
