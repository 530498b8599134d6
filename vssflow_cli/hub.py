"""Model bundles from the Hugging Face Hub, pinned to a revision and checked against their manifest.

Bundles are downloaded with ``huggingface_hub.snapshot_download`` into the standard HF cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), restricted to the
files inference needs (manifest, ONNX graphs and their external data, model cards). After every
pull each file listed in ``manifest.json`` is verified by sha256; a mismatch in the cache triggers
one forced re-download when online. With ``HF_HUB_OFFLINE=1`` only the cache is used.

Names for ``--model`` come from ``vssflow_cli/registry.json``: name -> repo + pinned commit.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from vssflow_cli.bundle import (
    DEFAULT_MODEL,
    FORMAT,
    MANIFEST,
    Manifest,
    default_model_dir,
    load_manifest,
    verify_files,
)
from vssflow_cli.errors import ModelError

REGISTRY_PATH = Path(__file__).resolve().parent / "registry.json"
ALLOW_PATTERNS = ["manifest.json", "*.onnx", "*.onnx.data", "*.md"]
CHECKPOINT_PATTERNS = ["*.safetensors"]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    repo: str | None = None
    revision: str | None = None
    published: bool = True
    embedded: bool = False
    description: str = ""
    manifest_sha256: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``vssflow models list``. ``path`` is set when the bundle is on disk."""

    name: str
    source: str  # "embedded" | "hub" | "cache"
    repo: str | None
    revision: str | None
    path: Path | None
    published: bool
    description: str = ""

    @property
    def available(self) -> bool:
        return self.path is not None


@lru_cache(maxsize=4)
def _read_registry(path: str) -> dict[str, RegistryEntry]:
    raw: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    out = {}
    for name, e in raw.get("models", {}).items():
        out[name] = RegistryEntry(
            name=name,
            repo=e.get("repo"),
            revision=e.get("revision"),
            published=bool(e.get("published", True)),
            embedded=bool(e.get("embedded", False)),
            description=str(e.get("description", "")),
            manifest_sha256=e.get("manifest_sha256"),
        )
    return out


def load_registry(path: str | os.PathLike | None = None) -> dict[str, RegistryEntry]:
    """name -> :class:`RegistryEntry` from ``registry.json``."""
    return _read_registry(str(path or REGISTRY_PATH))


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


def _cached_snapshot(repo: str, revision: str, cache_dir: Path) -> Path | None:
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
    from vssflow_cli.bundle import file_sha256

    if manifest_sha256 and (path / MANIFEST).is_file() and file_sha256(path / MANIFEST) != manifest_sha256:
        raise ModelError(f"model bundle {path}: sha256 mismatch for {MANIFEST} — re-download with "
                         f"`vssflow models pull {hint}`")
    manifest = load_manifest(path, verify=False)
    verify_files(manifest, pull_name=hint)
    return manifest


def pull_registered(
    name: str, cache_dir: str | os.PathLike | None = None, *, force: bool = False, include_checkpoint: bool = False
) -> Path:
    """Resolve a registry name to a verified bundle folder (the embedded one needs no download)."""
    reg = load_registry()
    entry = reg.get(name)
    if entry is None:
        raise ModelError(
            f"model {name!r} is not a known name ({', '.join(sorted(reg))}) — see `vssflow models list`, "
            "or pass a bundle folder or owner/repo@revision"
        )
    if entry.embedded:
        return default_model_dir()
    if not entry.published or not entry.repo or not entry.revision:
        raise ModelError(
            f"model {name!r} is not published yet — use the embedded default ({DEFAULT_MODEL}) or a local bundle"
        )
    return pull(
        entry.repo,
        entry.revision,
        cache_dir,
        name=name,
        force=force,
        include_checkpoint=include_checkpoint,
        manifest_sha256=entry.manifest_sha256,
    )


def pull_spec(spec: str, cache_dir: str | os.PathLike | None = None, *, force: bool = False,
              include_checkpoint: bool = False) -> Path:
    """``vssflow models pull SPEC``: a registry name or ``owner/repo@revision``."""
    if "@" in spec and "/" in spec.split("@", 1)[0]:
        repo, rev = spec.rsplit("@", 1)
        return pull(repo, rev, cache_dir, force=force, include_checkpoint=include_checkpoint)
    return pull_registered(spec, cache_dir, force=force, include_checkpoint=include_checkpoint)


def _manifest_name(path: Path) -> str | None:
    try:
        raw = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(raw.get("name") or path.name) if isinstance(raw, dict) and raw.get("format") == FORMAT else None


def list_models(cache_dir: str | os.PathLike | None = None) -> list[ModelInfo]:
    """Registry entries (embedded default first) plus vssflow bundles found in the HF cache."""
    cache = hub_cache_dir(cache_dir)
    out: list[ModelInfo] = []
    seen: set[Path] = set()
    for entry in load_registry().values():
        path: Path | None = None
        if entry.embedded:
            try:
                path = default_model_dir()
            except ModelError:
                path = None
            source = "embedded"
        else:
            source = "hub"
            if entry.repo and entry.revision:
                path = _cached_snapshot(entry.repo, entry.revision, cache)
        if path is not None:
            seen.add(path.resolve())
        out.append(ModelInfo(entry.name, source, entry.repo, entry.revision, path, entry.published, entry.description))
    if cache.is_dir():
        for snap in sorted(cache.glob(f"models--*/snapshots/*/{MANIFEST}")):
            folder = snap.parent
            if folder.resolve() in seen or (name := _manifest_name(folder)) is None:
                continue
            repo = folder.parent.parent.name[len("models--"):].replace("--", "/")
            out.append(ModelInfo(f"{repo}@{folder.name}", "cache", repo, folder.name, folder, True, name))
    return out
