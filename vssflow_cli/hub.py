"""Model bundles from the Hugging Face Hub, pinned to a revision and checked against their manifest.

Bundles are downloaded with ``huggingface_hub.snapshot_download`` into the standard HF cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), restricted to the
files inference needs (manifest, ONNX graphs and their external data, model cards). After every
pull each file listed in ``manifest.json`` is verified by sha256; a mismatch in the cache triggers
one forced re-download when online. With ``HF_HUB_OFFLINE=1`` only the cache is used.

Registry names and ``--model`` resolution: :mod:`vssflow_cli.models`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from vssflow_cli.bundle import MANIFEST, Manifest, file_sha256, load_manifest, verify_files
from vssflow_cli.errors import ModelError

ALLOW_PATTERNS = ["manifest.json", "*.onnx", "*.onnx.data", "*.md"]
CHECKPOINT_PATTERNS = ["*.safetensors"]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}


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
    try:
        path = _snapshot_download(
            repo_id=repo,
            revision=revision,
            cache_dir=str(cache_dir),
            allow_patterns=patterns,
            local_files_only=offline,
            force_download=force and not offline,
        )
    except (hf_errors.RepositoryNotFoundError, hf_errors.GatedRepoError) as e:
        raise ModelError(
            f"model {repo}@{revision}: Hub repo not found or not accessible ({type(e).__name__}) — "
            "check the name, or log in with `hf auth login` for a private repo"
        ) from e
    except hf_errors.RevisionNotFoundError as e:
        raise ModelError(f"model {repo}@{revision}: revision not found on the Hub — check the pinned revision") from e
    except (hf_errors.LocalEntryNotFoundError, hf_errors.IncompleteSnapshotError) as e:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        raise ModelError(
            f"model {repo}@{revision} is not (fully) in the HF cache {cache_dir} and {why} — "
            f"run `vssflow models pull {hint}` with network access"
        ) from e
    except (hf_errors.HfHubHTTPError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"model {repo}@{revision}: download failed ({first}) — retry, or check the network") from e
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
    manifest = load_manifest(path, verify=False)
    verify_files(manifest, pull_name=hint)
    return manifest
