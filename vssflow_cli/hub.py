"""Model bundles from the Hugging Face Hub, pinned to a revision and checked against their manifest.

Bundles are downloaded with ``huggingface_hub.snapshot_download`` into the standard HF cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), restricted to the
files inference needs (manifest, ONNX graphs and their external data, model cards). After every
pull each file listed in ``manifest.json`` is verified by sha256; a mismatch in the cache triggers
one forced re-download when online. With ``HF_HUB_OFFLINE=1`` only the cache is used.

Every request gets connect and read timeouts (huggingface_hub sends some with none) and the whole pull a
deadline, ``$VSSFLOW_HUB_TIMEOUT`` seconds (default 600): a Hub that accepts the connection and never
answers is a ModelError naming the endpoint, not a hang.

Registry names and ``--model`` resolution: :mod:`vssflow_cli.models`.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from vssflow_cli.bundle import MANIFEST, Manifest, check_graphs, file_sha256, load_manifest, verify_files
from vssflow_cli.errors import ModelError, UsageError

ALLOW_PATTERNS = ["manifest.json", "*.onnx", "*.onnx.data", "*.md"]
CHECKPOINT_PATTERNS = ["*.safetensors"]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}
TIMEOUT_ENV = "VSSFLOW_HUB_TIMEOUT"
DEFAULT_DEADLINE_S = 600.0  # the whole pull (a bundle is tens of MB)
REQUEST_TIMEOUT_S = 20.0  # connect / read of one request (at most a quarter of the deadline)
T = TypeVar("T")


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The HF hub cache folder, read from the environment at call time."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "huggingface" / "hub"


def is_offline() -> bool:
    """HF_HUB_OFFLINE (read at call time; huggingface_hub itself reads it once at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_deadline() -> float:
    """Seconds a pull may take in all: ``$VSSFLOW_HUB_TIMEOUT``, else :data:`DEFAULT_DEADLINE_S`."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_DEADLINE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds — set it to e.g. 600 or unset it")
    return value


def hub_endpoint() -> str:
    """The Hub URL huggingface_hub talks to (``$HF_ENDPOINT``, read by it at import)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return str(constants.ENDPOINT)


_bounded = False


def _bound_requests(timeout: float) -> None:
    """Bound connect/read/write/pool of every huggingface_hub request by ``timeout`` seconds.

    ``model_info``/``repo_info`` and the tree listing pass ``timeout=None`` (wait forever) explicitly,
    which beats a client default, so a request hook sets them. huggingface_hub versions without
    ``set_client_factory`` (the requests-based ones) are bounded by the deadline alone.
    """
    global _bounded
    if _bounded:
        return
    try:
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import default_client_factory
    except ImportError:
        return

    def fill(request: Any) -> None:
        have = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {k: timeout if have.get(k) is None else min(have[k], timeout)
                                         for k in ("connect", "read", "write", "pool")}  # fmt: skip

    def factory() -> Any:
        client = default_client_factory()
        client.event_hooks["request"].append(fill)
        return client

    set_client_factory(factory)
    _bounded = True


class _DeadlinePassed(Exception):
    pass


def _within(deadline: float, fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread; _DeadlinePassed if it has not returned after ``deadline`` seconds
    (the thread is left to its own request timeouts; it cannot keep the process alive)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="vssflow-hub-pull", daemon=True).start()
    if not done.wait(deadline):
        raise _DeadlinePassed
    if "error" in box:
        raise box["error"]
    return box["value"]


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of the HTTP clients huggingface_hub may use (they are no OSError)."""
    out: list[type[BaseException]] = []
    for mod in ("httpx2", "httpx", "requests"):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        err = getattr(m, "TransportError", None) or getattr(m, "RequestException", None)
        if isinstance(err, type) and issubclass(err, BaseException):
            out.append(err)
    return tuple(out)


def _is_timeout(e: BaseException | None) -> bool:
    while e is not None:
        if "timeout" in type(e).__name__.lower() or isinstance(e, TimeoutError):
            return True
        e = e.__cause__ or e.__context__
    return False


def _snapshot_download(**kwargs: Any) -> str:
    """The network boundary (tests replace this one function: there is no network there)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(**kwargs)


def cached_snapshot(repo: str, revision: str, cache_dir: Path) -> Path | None:
    """The snapshot folder of a commit already in the cache, or None (branch names: via refs/)."""
    base = cache_dir / ("models--" + repo.replace("/", "--"))
    rev = revision
    if not _COMMIT.match(revision):
        ref = base / "refs" / revision
        if not ref.is_file():
            return None
        rev = ref.read_text().strip()
    snap = base / "snapshots" / rev
    return snap if (snap / MANIFEST).is_file() else None


def _download(repo: str, revision: str, cache_dir: Path, force: bool, patterns: list[str], hint: str) -> Path:
    from huggingface_hub import errors as hf_errors

    offline = is_offline()
    deadline = hub_deadline()
    request_timeout = min(REQUEST_TIMEOUT_S, deadline / 4)  # a silent Hub is named before the deadline
    kwargs = dict(repo_id=repo, revision=revision, cache_dir=str(cache_dir), allow_patterns=patterns,
                  local_files_only=offline, force_download=force and not offline)  # fmt: skip
    try:
        if offline:
            path = _snapshot_download(**kwargs)
        else:
            _bound_requests(request_timeout)
            path = _within(deadline, lambda: _snapshot_download(etag_timeout=request_timeout, **kwargs))
    except _DeadlinePassed as e:
        raise ModelError(
            f"model {repo}@{revision}: the Hub at {hub_endpoint()} did not finish in {deadline:g} s — check the "
            f"network or HF_ENDPOINT, allow more with {TIMEOUT_ENV}=<seconds>, or use the cache with HF_HUB_OFFLINE=1"
        ) from e
    except (hf_errors.RepositoryNotFoundError, hf_errors.GatedRepoError) as e:
        raise ModelError(
            f"model {repo}@{revision}: Hub repo not found or not accessible ({type(e).__name__}) — "
            "check the name, or log in with `hf auth login` for a private repo"
        ) from e
    except hf_errors.RevisionNotFoundError as e:
        raise ModelError(f"model {repo}@{revision}: revision not found on the Hub — check the pinned revision") from e
    except (hf_errors.LocalEntryNotFoundError, hf_errors.IncompleteSnapshotError) as e:
        if offline:
            why, fix = "HF_HUB_OFFLINE is set", f"run `vssflow models pull {hint}` with network access"
        else:
            why = f"the Hub at {hub_endpoint()} " + (f"did not answer within {request_timeout:g} s" if _is_timeout(e)
                                                     else "could not be reached")
            fix = f"check the network or HF_ENDPOINT, then run `vssflow models pull {hint}`"
        raise ModelError(f"model {repo}@{revision} is not (fully) in the HF cache {cache_dir} and {why} — {fix}") from e
    except (hf_errors.HfHubHTTPError, OSError, *_network_errors()) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"model {repo}@{revision}: download from {hub_endpoint()} failed ({first}) — retry, "
                         "or check the network") from e
    return Path(path)


def pull(
    repo: str,
    revision: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    force: bool = False,
    include_checkpoint: bool = False,
    manifest_sha256: str | None = None,
) -> Path:
    """Download (or find in the cache) ``repo`` at ``revision`` and verify it; returns the bundle folder.

    Every file the manifest lists is checked by sha256 (optional ones, like the torch checkpoint,
    only if present; pass ``include_checkpoint=True`` to fetch it). A mismatch triggers one forced
    re-download when online, then ModelError. ``name`` is what error messages tell the user to pull.
    """
    if not revision:
        raise ModelError(f"model {repo}: no revision given — pin one, e.g. `{repo}@<commit>`")
    hint = name or f"{repo}@{revision}"
    cache = hub_cache_dir(cache_dir)
    patterns = ALLOW_PATTERNS + (CHECKPOINT_PATTERNS if include_checkpoint else [])
    path = _download(repo, revision, cache, force, patterns, hint)
    try:
        manifest = _verified(path, manifest_sha256, hint)
    except ModelError:
        if is_offline() or force:
            raise
        path = _download(repo, revision, cache, True, patterns, hint)  # replace the damaged cache entry
        manifest = _verified(path, manifest_sha256, hint)
    return manifest.root


def _verified(path: Path, manifest_sha256: str | None, hint: str) -> Manifest:
    if manifest_sha256 and (path / MANIFEST).is_file() and file_sha256(path / MANIFEST) != manifest_sha256:
        raise ModelError(f"model bundle {path}: sha256 mismatch for {MANIFEST} — re-download with "
                         f"`vssflow models pull {hint}`")
    manifest = load_manifest(path, verify=False)  # also checks the manifest's values (bundle.check_ranges)
    verify_files(manifest, pull_name=hint)
    check_graphs(manifest)
    return manifest
