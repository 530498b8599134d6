"""Hub bundles: pinned download into the HF cache, sha256 verification, offline mode, registry.

There is no network here, so ONE function is replaced: ``hub._snapshot_download`` when it would go
online. The fake lays a local bundle out exactly like the HF cache (models--owner--name/refs +
snapshots/<commit>/). Offline look-ups go through the real ``huggingface_hub.snapshot_download``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_bundle import make_simple_bundle  # tests/ is on sys.path under pytest

from vssflow_cli import hub, models
from vssflow_cli.bundle import load_manifest
from vssflow_cli.errors import ModelError, UsageError
from vssflow_cli.models import resolve_model
from vssflow_cli.runtime import get_session

REPO = "someone/vssflow-test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 'remote' bundle + an HF cache dir; records online download calls."""
    remote = make_simple_bundle(tmp_path / "remote", name="vssflow-test", external=True)
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls: list[dict] = []
    real = hub._snapshot_download

    def snapshot_download(**kw):
        if kw["local_files_only"]:
            return real(**kw)  # the real library, cache only
        calls.append(kw)
        assert kw["repo_id"] == REPO and kw["revision"] == COMMIT
        base = Path(kw["cache_dir"]) / ("models--" + REPO.replace("/", "--"))
        snap = base / "snapshots" / COMMIT
        snap.mkdir(parents=True, exist_ok=True)
        (base / "blobs").mkdir(exist_ok=True)
        for f in remote.iterdir():  # like the real cache: snapshot entries are symlinks to blobs/<hash>
            if any(f.match(p) for p in kw["allow_patterns"]) and (kw["force_download"] or not (snap / f.name).exists()):
                blob = base / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
                shutil.copyfile(f, blob)
                (snap / f.name).unlink(missing_ok=True)
                (snap / f.name).symlink_to(os.path.relpath(blob, snap))
        (base / "refs").mkdir(exist_ok=True)
        (base / "refs" / "main").write_text(COMMIT)
        return str(snap)

    monkeypatch.setattr(hub, "_snapshot_download", snapshot_download)
    return remote, cache, calls


def test_pull_downloads_pinned_inference_files_and_verifies(fake_hub) -> None:
    _, cache, calls = fake_hub
    path = hub.pull(REPO, COMMIT)
    assert path.is_relative_to(cache) and path.name == COMMIT
    assert calls[0]["allow_patterns"] == hub.ALLOW_PATTERNS
    assert sorted(p.name for p in path.iterdir()) == ["decoder.onnx", "dit.onnx", "manifest.json",
                                                      "velocity.onnx.data"]
    m = load_manifest(path)  # the optional checkpoint was not fetched: still a valid bundle
    assert not m.has("checkpoint") and m.name == "vssflow-test"
    # the graph's external data resolves through the cache's symlinks
    (v,) = get_session(m.path("dit"), ["CPUExecutionProvider"], 1).run(["v"], {"x": np.ones((1, 3, 4), np.float32)})
    assert v.shape == (1, 3, 4) and np.abs(v).max() > 0

    full = hub.pull(REPO, COMMIT, include_checkpoint=True)
    assert load_manifest(full).has("checkpoint")


def test_tampered_cache_is_redownloaded_online_and_fails_offline(fake_hub, monkeypatch) -> None:
    remote, _, calls = fake_hub
    path = hub.pull(REPO, COMMIT)
    (path / "dit.onnx").unlink()
    (path / "dit.onnx").write_bytes(b"tampered")
    assert hub.pull(REPO, COMMIT) == path  # online: one forced re-download repairs it
    assert calls[-1]["force_download"] is True
    assert (path / "dit.onnx").read_bytes() == (remote / "dit.onnx").read_bytes()

    (path / "decoder.onnx").unlink()
    (path / "decoder.onnx").write_bytes(b"tampered")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(calls)
    with pytest.raises(ModelError, match=rf"sha256 mismatch for decoder.onnx .*vssflow models pull {REPO}@{COMMIT}"):
        hub.pull(REPO, COMMIT)
    assert len(calls) == n  # offline: no download attempted


def test_remote_with_wrong_hash_fails_after_retry(fake_hub) -> None:
    remote, _, calls = fake_hub
    (remote / "dit.onnx").write_bytes(b"corrupted on the remote")
    with pytest.raises(ModelError, match="sha256 mismatch for dit.onnx"):
        hub.pull(REPO, COMMIT)
    assert [c["force_download"] for c in calls] == [False, True]


def test_insane_manifest_value_on_the_remote_is_refused(fake_hub) -> None:
    remote, _, calls = fake_hub
    raw = json.loads((remote / "manifest.json").read_text())
    raw["sampler"]["steps"] = 0
    (remote / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"manifest field sampler.steps=0 is out of range 1..1000"):
        hub.pull(REPO, COMMIT)
    assert [c["force_download"] for c in calls] == [False, True]


def test_offline_uses_cache_and_fails_cleanly_without(fake_hub, monkeypatch) -> None:
    calls = fake_hub[2]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not \\(fully\\) in the HF cache .*HF_HUB_OFFLINE"):
        hub.pull(REPO, COMMIT)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    online = hub.pull(REPO, COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(calls)
    assert hub.pull(REPO, COMMIT) == online
    assert resolve_model(f"{REPO}@{COMMIT}") == online  # --model owner/repo@rev, from the cache
    assert len(calls) == n


def test_registry_entries(fake_hub, monkeypatch) -> None:
    reg = models.load_registry()
    assert reg["vssflow-tiny"].embedded
    assert not reg["vssflow-paper"].published
    for e in reg.values():  # every published Hub entry pins a full commit
        if e.published and not e.embedded:
            assert e.repo and e.revision and len(e.revision) == 40
    with pytest.raises(ModelError, match="not published yet"):
        models.pull_spec("vssflow-paper")
    with pytest.raises(ModelError, match="no revision"):
        hub.pull(REPO, "")

    # a registered, published name resolves through the cache (registry swapped for the test)
    entry = models.RegistryEntry("test-model", REPO, COMMIT)
    monkeypatch.setattr(models, "load_registry", lambda path=None: {**reg, "test-model": entry})
    path = models.pull_spec("test-model")
    assert resolve_model("test-model") == path


def test_list_models_shows_registry_and_cached(fake_hub) -> None:
    before = {m.name: m for m in models.list_models()}
    assert before["vssflow-paper"].path is None and before["vssflow-paper"].published is False
    assert before["vssflow-tiny"].source == "embedded"
    hub.pull(REPO, COMMIT)
    after = {m.name: m for m in models.list_models()}
    cached = after[f"{REPO}@{COMMIT}"]
    assert cached.source == "cache" and cached.available and cached.description == "vssflow-test"


def test_cache_dir_follows_hf_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub.hub_cache_dir() == tmp_path / "c"
    assert hub.hub_cache_dir(tmp_path / "x") == tmp_path / "x"


# --------------------------------------------------------------------------- a Hub that never answers (issue 13 item 1)


@contextlib.contextmanager
def stalled_hub(mode: str) -> Iterator[str]:
    """A real listening socket on 127.0.0.1 that accepts and then never answers ("silent"), or sends one
    header line every 0.2 s forever ("trickle": no read ever times out, only a total deadline ends it)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # accept() times out every 0.1 s
                conn = server.accept()[0]
                held.append(conn)
                if mode == "trickle":
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for conn in held if mode == "trickle" else ():
                with contextlib.suppress(OSError):
                    conn.sendall(b"X-Wait: 1\r\n")
            time.sleep(0.1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("command", ["pull", "foley"])
@pytest.mark.parametrize("mode", ["silent", "trickle"])
def test_stalled_hub_is_a_model_error_naming_the_endpoint(mode, command, cli, clip_short, tmp_path) -> None:
    args = (["models", "pull", "someone/bundle@main"] if command == "pull"
            else ["foley", clip_short, "-o", tmp_path / "out.mp4", "--model", "someone/bundle@main"])  # fmt: skip
    with stalled_hub(mode) as endpoint:
        t0 = time.monotonic()
        try:
            r = cli(*args, timeout=30, HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(tmp_path / "hf"), HF_HUB_OFFLINE="0",
                    VSSFLOW_HUB_TIMEOUT="4")  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"vssflow {command} hung on a {mode} Hub")
        elapsed = time.monotonic() - t0
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 4, r.stderr
    assert len(lines) == 1 and endpoint in lines[0] and "Traceback" not in r.stderr, r.stderr
    # silent: a request's read timeout (a quarter of the deadline) ends it; trickle: the deadline itself
    assert ("did not answer within 1 s" if mode == "silent" else "did not finish in 4 s") in lines[0]
    assert elapsed < 15
    assert not (tmp_path / "out.mp4").exists()


def test_offline_never_asks_the_stalled_hub(cli, tmp_path) -> None:
    with stalled_hub("silent") as endpoint:
        r = cli("models", "pull", "someone/bundle@main", timeout=30, HF_ENDPOINT=endpoint,
                HF_HUB_CACHE=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")  # fmt: skip
    assert r.returncode == 4 and "HF_HUB_OFFLINE is set" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_hub_timeout_env(monkeypatch) -> None:
    monkeypatch.delenv(hub.TIMEOUT_ENV, raising=False)
    assert hub.hub_deadline() == hub.DEFAULT_DEADLINE_S
    monkeypatch.setenv(hub.TIMEOUT_ENV, "2.5")
    assert hub.hub_deadline() == 2.5
    for bad in ("soon", "0", "-1", "inf"):
        monkeypatch.setenv(hub.TIMEOUT_ENV, bad)
        with pytest.raises(UsageError, match=hub.TIMEOUT_ENV):
            hub.hub_deadline()


def test_deadline_bounds_a_pull_that_never_returns(fake_hub, monkeypatch) -> None:
    monkeypatch.setattr(hub, "_snapshot_download", lambda **kw: time.sleep(30))
    monkeypatch.setenv(hub.TIMEOUT_ENV, "0.5")
    t0 = time.monotonic()
    with pytest.raises(ModelError, match=r"the Hub at \S+ did not finish in 0.5 s"):
        hub.pull(REPO, COMMIT)
    assert time.monotonic() - t0 < 5
