"""The verified-hash cache: a repeat verification reads no bundle file; any change to a file is re-hashed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from vssflow_cli import bundle
from vssflow_cli.bundle import load_manifest, write_bundle
from vssflow_cli.config import ModelConfig
from vssflow_cli.errors import ModelError

CFG = ModelConfig(name="t", latent_channels=4, width=16, depth=1, heads=2, ffn_hidden=32, cross_dim=8)
PAST = 1_600_000_000  # 2020: long settled


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A private cache folder, an empty in-memory cache, and the names of the files hashed since."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(bundle, "_HASH_CACHE", {})
    monkeypatch.setattr(bundle, "_disk_loaded", False)
    hashed: list[str] = []
    real = bundle._hash_file
    monkeypatch.setattr(bundle, "_hash_file", lambda p: hashed.append(Path(p).name) or real(p))
    return {"hashed": hashed}


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new `vssflow` process starts with: nothing in memory, the disk cache not read yet."""
    monkeypatch.setattr(bundle, "_HASH_CACHE", {})
    monkeypatch.setattr(bundle, "_disk_loaded", False)


def settled_bundle(root: Path) -> Path:
    src = root / "src"
    src.mkdir()
    (src / "dit.bin").write_bytes(os.urandom(4096))
    (src / "dec.bin").write_bytes(os.urandom(1000))
    out = write_bundle(root / "b", config=CFG, files={"dit": src / "dit.bin", "decoder": src / "dec.bin"},
                       phoneme_vocab=["<none>"], name="b")
    for f in out.iterdir():
        os.utime(f, (PAST, PAST))
    return out


def assert_rehashed_and_refused(out: Path, cache, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a new process, dit.bin (changed) is read again and refused; decoder.bin still comes from the cache."""
    new_process(monkeypatch)
    cache["hashed"].clear()
    with pytest.raises(ModelError, match="sha256 mismatch for dit.bin"):
        load_manifest(out)
    assert cache["hashed"] == ["dit.bin"]


def test_a_repeat_verification_reads_no_file(tmp_path: Path, cache, monkeypatch: pytest.MonkeyPatch) -> None:
    out = settled_bundle(tmp_path)
    new_process(monkeypatch)
    cache["hashed"].clear()
    load_manifest(out)
    assert sorted(cache["hashed"]) == ["decoder.bin", "dit.bin"]
    saved = json.loads(bundle.hash_cache_path().read_text())
    assert saved["version"] == 1
    assert set(saved["files"]) == {str((out / n).resolve()) for n in ("dit.bin", "decoder.bin")}
    for _ in range(2):
        new_process(monkeypatch)
        cache["hashed"].clear()
        load_manifest(out)
        assert cache["hashed"] == []  # neither file was read: the digests came from the disk cache


def test_a_file_changed_in_place_is_rehashed_and_refused(tmp_path: Path, cache, monkeypatch: pytest.MonkeyPatch):
    out = settled_bundle(tmp_path)
    load_manifest(out)
    dit = out / "dit.bin"
    size = dit.stat().st_size
    with open(dit, "r+b") as f:  # same size, new content, new mtime
        f.write(b"\0" * 16)
    os.utime(dit, (PAST + 60, PAST + 60))
    assert dit.stat().st_size == size
    assert_rehashed_and_refused(out, cache, monkeypatch)


def test_content_changed_with_the_mtime_restored_is_rehashed(tmp_path: Path, cache, monkeypatch: pytest.MonkeyPatch):
    out = settled_bundle(tmp_path)
    load_manifest(out)
    dit = out / "dit.bin"
    st = dit.stat()
    time.sleep(0.05)  # file timestamps tick every few ms: the rewrite must land in a later tick
    with open(dit, "r+b") as f:
        f.write(b"\0" * 16)
    os.utime(dit, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as cached: only the ctime moved
    assert (dit.stat().st_size, dit.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert_rehashed_and_refused(out, cache, monkeypatch)


def test_a_replaced_file_is_rehashed(tmp_path: Path, cache, monkeypatch: pytest.MonkeyPatch) -> None:
    out = settled_bundle(tmp_path)
    load_manifest(out)
    dit = out / "dit.bin"
    st = dit.stat()
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * st.st_size)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, dit)  # same size and mtime, another inode
    assert_rehashed_and_refused(out, cache, monkeypatch)


def test_files_modified_just_now_are_not_cached(tmp_path: Path, cache, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "fresh.bin"
    f.write_bytes(b"abc")
    digest = bundle.file_sha256(f)
    assert bundle.file_sha256(f) == digest and cache["hashed"] == ["fresh.bin", "fresh.bin"]
    assert not bundle.hash_cache_path().exists()
    os.utime(f, (PAST, PAST))
    bundle.file_sha256(f)
    bundle.file_sha256(f)
    assert cache["hashed"] == ["fresh.bin"] * 3
    assert bundle.file_sha256(f, cache=False) == digest and len(cache["hashed"]) == 4


def test_one_entry_per_path_and_deleted_files_dropped(tmp_path: Path, cache) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    for f in (a, b):
        f.write_bytes(b"1")
        os.utime(f, (PAST, PAST))
        bundle.file_sha256(f)
    a.write_bytes(b"2")
    os.utime(a, (PAST + 1, PAST + 1))
    b.unlink()
    bundle.file_sha256(a)
    files = json.loads(bundle.hash_cache_path().read_text())["files"]
    assert list(files) == [str(a.resolve())] and files[str(a.resolve())]["mtime_ns"] == (PAST + 1) * 10**9


def test_an_unusable_cache_never_fails_a_run(tmp_path: Path, cache, monkeypatch: pytest.MonkeyPatch) -> None:
    out = settled_bundle(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # <file>/vssflow/hashes.json cannot be created
    new_process(monkeypatch)
    load_manifest(out)
    good = tmp_path / "xdg2"
    (good / "vssflow").mkdir(parents=True)
    (good / "vssflow" / "hashes.json").write_text("{broken")
    monkeypatch.setenv("XDG_CACHE_HOME", str(good))
    new_process(monkeypatch)
    cache["hashed"].clear()
    load_manifest(out)  # a damaged cache file is ignored, then rewritten
    assert sorted(cache["hashed"]) == ["decoder.bin", "dit.bin"]
    assert len(json.loads((good / "vssflow" / "hashes.json").read_text())["files"]) == 2
