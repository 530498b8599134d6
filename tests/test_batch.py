"""Batches: inputs from lists, shards, skip-existing, a report, and survival of broken inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import files_in, json_lines, sha256, video_md5
from hypothesis import given
from hypothesis import strategies as st

from vssflow_cli import __version__
from vssflow_cli.batch import BatchReport, Item, dedupe, default_output, parse_shard, read_list, select_shard
from vssflow_cli.errors import UsageError


@given(n_items=st.integers(0, 60), n=st.integers(1, 9))
def test_shards_partition_the_inputs(n_items: int, n: int) -> None:
    items = [f"v{i}.mp4" for i in range(n_items)]
    shards = [select_shard(items, (i, n)) for i in range(1, n + 1)]
    assert sorted(sum(shards, [])) == sorted(items)  # complete, and disjoint (no duplicates)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    assert shards == [select_shard(items, (i, n)) for i in range(1, n + 1)]  # deterministic


@pytest.mark.parametrize("bad", ["0/3", "4/3", "1/0", "a/b", "3", "1/2/3", "-1/2", ""])
def test_parse_shard_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_shard(bad)
    assert parse_shard("2/8") == (2, 8)


def test_read_list_and_dedupe(tmp_path: Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("# comment\n\na.mp4\n  /abs/b.mp4  \nsub/c d.mp4\na.mp4\n", encoding="utf-8")
    got = read_list(lst)
    assert got == [str(tmp_path / "a.mp4"), "/abs/b.mp4", str(tmp_path / "sub/c d.mp4"), str(tmp_path / "a.mp4")]
    assert dedupe(got) == got[:3]
    with pytest.raises(UsageError):
        read_list(tmp_path / "missing.txt")


def test_default_output_names(tmp_path: Path) -> None:
    assert default_output("d/clip.mp4", "foley", out_dir=None, wav=False) == Path("d/clip.foley.mp4")
    assert default_output("d/clip.MOV", "dub", out_dir=tmp_path, wav=False) == tmp_path / "clip.dub.mov"
    assert default_output("d/clip.mp4", "foley", out_dir=None, wav=True) == Path("d/clip.foley.wav")
    assert default_output("d/anim.gif", "foley", out_dir=None, wav=False) == Path("d/anim.foley.mkv")


def test_report_exit_codes() -> None:
    r = BatchReport("foley", [Item("a", "A", "ok"), Item("b", "B", "failed", "x", 3)])
    assert r.exit_code == 1 and r.to_dict()["failed"] == 1
    assert BatchReport("foley", [Item("b", "B", "failed", "x", 3)]).exit_code == 3  # one input: its class
    assert BatchReport("foley", [Item("a", "A", "skipped")]).exit_code == 0


@pytest.fixture
def batch_dir(tmp_path: Path, clip_short: Path, clip12: Path) -> tuple[Path, list[str], set[str]]:
    """20 inputs, 3 of them broken: garbage bytes, an empty file, a truncated MP4."""
    d = tmp_path / "in"
    d.mkdir()
    names = []
    for i in range(17):
        names.append(f"ok {i:02d}.mp4")
        shutil.copy(clip_short, d / names[-1])
    (d / "garbage.mp4").write_bytes(b"\x00\x01not a video" * 100)
    (d / "empty.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(clip12.read_bytes()[:5000])
    names[5:5] = ["garbage.mp4"]
    names[11:11] = ["empty.mp4"]
    names.append("truncated.mp4")
    (d / "list.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return d, names, {"garbage.mp4", "empty.mp4", "truncated.mp4"}


def test_batch_of_20_with_3_broken(cli, tmp_path: Path, batch_dir) -> None:
    d, names, broken = batch_dir
    out = tmp_path / "out"
    r = cli("foley", "--from-list", d / "list.txt", "--out-dir", out, "--report", tmp_path / "report.json",
            "--steps", "1", timeout=600)  # fmt: skip
    assert r.returncode == 1, r.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    assert (rep["total"], rep["ok"], rep["failed"], rep["skipped"]) == (20, 17, 3, 0)
    failed = {Path(it["input"]).name: it for it in rep["items"] if it["status"] == "failed"}
    assert set(failed) == broken and all(it["exit_code"] == 3 for it in failed.values())
    assert [Path(it["input"]).name for it in rep["items"]] == names  # list order kept
    expected = {f"ok {i:02d}.foley.mp4" for i in range(17)}
    assert files_in(out) == expected  # no partial or temp files
    assert video_md5(out / "ok 03.foley.mp4") == video_md5(d / "ok 03.mp4")
    assert sum(line.startswith("vssflow: error:") for line in r.stderr.splitlines()) == 3
    assert "17 ok, 3 failed" in r.stderr  # the summary table
    assert cli.leftover_tmp() == set()
    print(f"batch of 20: 17 ok, 3 failed; report items {len(rep['items'])}")

    # a second run skips what exists and still reports the broken ones
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = cli("foley", "--from-list", d / "list.txt", "--out-dir", out, "--skip-existing", "--json", "--steps", "1")
    assert r.returncode == 1
    statuses = [o["status"] for o in json_lines(r.stdout)]
    assert statuses.count("skipped") == 17 and statuses.count("failed") == 3
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    # without --skip-existing or --overwrite, existing outputs are errors, never clobbered
    r = cli("foley", d / "ok 00.mp4", d / "ok 01.mp4", "--out-dir", out, "--steps", "1")
    errors = [line for line in r.stderr.splitlines() if line.startswith("vssflow: error:")]
    assert r.returncode == 1 and len(errors) == 2 and all("already exists" in e for e in errors)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_cli_shards_split_without_overlap(cli, tmp_path: Path, clip_short: Path) -> None:
    clips = []
    for i in range(5):
        clips.append(tmp_path / f"c{i}.mp4")
        shutil.copy(clip_short, clips[-1])
    seen: list[str] = []
    for k in (1, 2, 3):
        r = cli("foley", *clips, "--shard", f"{k}/3", "--wav", "--json", "--steps", "1")
        assert r.returncode == 0, r.stderr
        seen += [o["input"] for o in json_lines(r.stdout)]
    assert sorted(seen) == sorted(map(str, clips))


def test_model_error_stops_the_batch(cli, tmp_path: Path, clip_short: Path) -> None:
    r = cli("foley", clip_short, clip_short.with_name("clip4.mp4"), "--out-dir", tmp_path / "o",
            "--model", tmp_path / "no-such-bundle", "--report", tmp_path / "r.json")  # fmt: skip
    assert r.returncode == 4, r.stderr
    assert r.stderr.count("\n") == 1 and "no-such-bundle" in r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["stopped"] and rep["not_run"] == 1
    assert files_in(tmp_path / "o") == set()


def test_an_input_its_own_type_cannot_hold_fails_alone(cli, tmp_path: Path, clip_short: Path) -> None:
    """A .m4v (iPod MP4) can hold H.264 but not the HEVC an MP4 muxer put in this one: that input fails
    with exit code 2 and the reason before any work, the batch goes on (issue 13.12)."""
    from conftest import make_clip

    src = tmp_path / "in"
    src.mkdir()
    hevc = make_clip(src / "hevc.m4v", 1, size="64x48", audio=False, extra=("-f", "mp4"),
                     video_args=("-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p"))  # fmt: skip
    ok = src / "ok.mp4"
    shutil.copy(clip_short, ok)
    r = cli("foley", hevc, ok, "--out-dir", tmp_path / "out", "--steps", "1", "--json")
    assert r.returncode == 1, r.stderr
    bad, good = json_lines(r.stdout)
    assert bad["status"] == "failed" and bad["exit_code"] == 2, bad
    assert bad["error"].endswith("a .m4v file cannot hold this hevc video (vssflow never re-encodes the picture); "
                                 "name the output with one of .mp4 .mov .mkv .ts .m2ts .mts .flv")  # fmt: skip
    assert good["status"] == "ok"
    assert files_in(tmp_path / "out") == {"ok.foley.mp4"}


def test_batch_outputs_never_collide_or_replace_an_input(cli, tmp_path: Path, clip_short: Path) -> None:
    """Issue 13 item 2: outputs are planned for the whole batch first; two inputs writing one output, or an output
    that is another input, are refused (exit 2, one line naming both) before any work, nothing written."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(clip_short, tmp_path / sub / "clip.mp4")
    before = files_in(tmp_path)
    r = cli("foley", tmp_path / "a/clip.mp4", tmp_path / "b/clip.mp4", "--out-dir", tmp_path / "out", "--overwrite")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    both = f"{tmp_path / 'a/clip.mp4'} and {tmp_path / 'b/clip.mp4'} would both write {tmp_path / 'out/clip.foley.mp4'}"
    assert both in r.stderr
    assert "use -o per file or separate --out-dir" in r.stderr
    assert files_in(tmp_path) - before <= {"out", "sys-tmp/.ses"}

    x = tmp_path / "x.mp4"
    shutil.copy(clip_short, x)
    shutil.copy(clip_short, tmp_path / "x.foley.mp4")  # an input that x.mp4's default output would replace
    before = {p.name: sha256(p) for p in tmp_path.glob("*.mp4")}
    r = cli("foley", x, tmp_path / "x.foley.mp4", "--overwrite")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{x} would write {tmp_path / 'x.foley.mp4'}, which is also an input of this batch" in r.stderr
    assert {p.name: sha256(p) for p in tmp_path.glob("*.mp4")} == before


def test_plan_compares_resolved_paths_and_hard_links(tmp_path: Path, clip_short: Path) -> None:
    """Issue 13 item 2: `d/../d/v.mp4`, a symlink or a hard link to an input counts as that input."""
    from vssflow_cli.batch import Request, plan

    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(clip_short, d / "v.mp4")
    shutil.copy(clip_short, d / "w.mp4")
    with pytest.raises(UsageError, match="would both write"):
        plan(Request("foley", (str(d / "v.mp4"), str(tmp_path / "e" / "v.mp4")), out_dir=tmp_path / "o"))
    (d / "v.foley.mp4").hardlink_to(d / "w.mp4")
    with pytest.raises(UsageError, match="also an input"):
        plan(Request("foley", (str(d / "v.mp4"), str(d / "w.mp4"))))
    (d / "v.foley.mp4").unlink()
    (d / "link.mp4").symlink_to(d / "v.foley.mp4")  # dangling until v.mp4 is processed
    with pytest.raises(UsageError, match="also an input"):
        plan(Request("foley", (str(d / "v.mp4"), str(d / "link.mp4"))))
    report, _ = plan(Request("foley", (str(d / "v.mp4"), str(d / "w.mp4"))))  # distinct outputs: fine
    assert [it.output for it in report.items] == [str(d / "v.foley.mp4"), str(d / "w.foley.mp4")]


def test_rerunning_over_a_folder_skips_its_own_outputs(cli, tmp_path: Path, clip_short: Path) -> None:
    """Issue 13 item 3: the README loop run twice never makes clip.foley.foley.mp4: an input tagged as a vssflow
    output is skipped with a one-line note (exit 0, "skipped" in the summary), unless --force."""
    clip = tmp_path / "clip.mp4"
    shutil.copy(clip_short, clip)
    assert cli("foley", clip, "--steps", "1").returncode == 0
    out = tmp_path / "clip.foley.mp4"
    before = files_in(tmp_path)
    r = cli("foley", out, "--steps", "1")
    assert r.returncode == 0, r.stderr
    note = f"already a vssflow {__version__} foley output; pass --force to process it again"
    assert r.stdout == f"{out}: skipped, {note}\n"
    assert files_in(tmp_path) == before  # no clip.foley.foley.mp4
    r = cli("foley", clip, out, "--steps", "1", "--skip-existing", "--json")  # `vssflow foley *.mp4` again
    assert r.returncode == 0, r.stderr
    got = [(o["status"], o["output"], o["note"]) for o in json_lines(r.stdout)]
    assert got == [("skipped", str(out), f"{out} exists"), ("skipped", None, note)]  # nothing written for it
    assert "0 ok, 0 failed, 2 skipped" in r.stderr  # the summary
    assert files_in(tmp_path) == before
    r = cli("foley", out, "--steps", "1", "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "clip.foley.foley.mp4").is_file()


def test_every_container_carries_the_vssflow_mark(tmp_path: Path, subtitled: Path) -> None:
    """Issue 13 item 3: the mark mux writes reads back from each kind of output (MJPEG fits them all)."""
    from conftest import ffmpeg

    from vssflow_cli.media import vssflow_mark
    from vssflow_cli.mux import mux

    ffmpeg("-f", "lavfi", "-i", "sine=duration=2:sample_rate=16000", str(tmp_path / "g.wav"))
    assert vssflow_mark(subtitled) is None
    for ext in (".mkv", ".mp4", ".mov", ".avi"):
        for mix in ("replace", "add", "keep"):
            out = mux(subtitled, tmp_path / "g.wav", tmp_path / f"o-{mix}{ext}", mix=mix, title="vssflow dub")
            assert vssflow_mark(out) in (f"vssflow {__version__} dub", "vssflow dub", "original + vssflow dub"), out
    assert vssflow_mark(tmp_path / "g.wav") is None and vssflow_mark(tmp_path / "missing.mkv") is None
