"""Which model a ``--model`` value means: the embedded default, local bundles, the registry.

* ``None`` or ``"vssflow-tiny"``: the embedded default. Looked up in ``$VSSFLOW_WEIGHTS`` first
  (a folder holding ``vssflow-tiny/``, or the bundle folder itself; for installed wheels that do
  not carry the weights), then ``vssflow_cli/weights/`` (package data), then ``weights/`` in the
  source checkout (the parent of ``vssflow_cli/``).
* a local bundle folder (or its ``manifest.json``);
* a registry name (``vssflow_cli/registry.json``: name -> repo + pinned commit) or
  ``owner/repo@REVISION``: fetched from the Hugging Face Hub at a pinned revision into the
  standard HF cache (see :mod:`vssflow_cli.hub`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from vssflow_cli import hub
from vssflow_cli.bundle import FORMAT, MANIFEST, bundle_dir
from vssflow_cli.errors import ModelError

DEFAULT_MODEL = "vssflow-tiny"
WEIGHTS_ENV = "VSSFLOW_WEIGHTS"
REGISTRY_PATH = Path(__file__).resolve().parent / "registry.json"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REPO_REV = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+@[\w./-]+$")


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

    def to_dict(self) -> dict[str, Any]:
        """The ``vssflow models list --json`` object (``available`` left out, as ``path`` says it)."""
        return {"name": self.name, "source": self.source, "repo": self.repo, "revision": self.revision,
                "path": str(self.path) if self.path else None, "published": self.published,
                "description": self.description}  # fmt: skip


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


def default_model_candidates() -> list[Path]:
    """Where the embedded default bundle is looked for, in order (see the module docstring)."""
    pkg = Path(__file__).resolve().parent
    out: list[Path] = []
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        p = Path(env).expanduser()
        out += [p, p / DEFAULT_MODEL] if (p / MANIFEST).is_file() else [p / DEFAULT_MODEL]
    out += [pkg / "weights" / DEFAULT_MODEL, pkg.parent / "weights" / DEFAULT_MODEL]
    return out


def default_model_dir() -> Path:
    """The embedded default bundle folder; ModelError if it is nowhere to be found."""
    cands = default_model_candidates()
    for c in cands:
        if (c / MANIFEST).is_file():
            return c.resolve()
    raise ModelError(
        f"embedded model {DEFAULT_MODEL} not found (looked in {', '.join(str(c) for c in cands)}) — "
        f"set {WEIGHTS_ENV} to the folder holding {DEFAULT_MODEL}/ or pass --model"
    )


def resolve_model(spec: str | os.PathLike | None) -> Path:
    """Turn a ``--model`` value into a bundle folder (not yet verified; see :func:`vssflow_cli.bundle.load_manifest`).

    None / "vssflow-tiny" -> the embedded default; an existing path -> that bundle;
    a registry name or ``owner/repo@REVISION`` -> the Hub snapshot in the HF cache (downloaded
    if missing and online; with ``HF_HUB_OFFLINE=1`` only the cache is used).
    """
    if spec is None or str(spec) == DEFAULT_MODEL:
        return default_model_dir()
    s = str(spec)
    local = Path(s).expanduser()
    if isinstance(spec, os.PathLike) or local.exists() or s.startswith((".", "/", "~")):
        p = bundle_dir(local)
        if not (p / MANIFEST).is_file():
            raise ModelError(
                f"model bundle {p}: no {MANIFEST} — pass a bundle folder made by `vssflow export` "
                "or a model name from `vssflow models list`"
            )
        return p.resolve()
    if _REPO_REV.match(s):
        repo, rev = s.rsplit("@", 1)
        return hub.pull(repo, rev)
    if _REPO.match(s):
        raise ModelError(
            f"model {s!r} is no local folder and has no pinned revision — for a Hub repo use "
            f"`--model {s}@<commit>`, for a folder check the path"
        )
    if "/" in s or os.sep in s:
        raise ModelError(f"model bundle {s}: no such folder — check the path or see `vssflow models list`")
    return pull_registered(s)




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
    return hub.pull(
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
        return hub.pull(repo, rev, cache_dir, force=force, include_checkpoint=include_checkpoint)
    return pull_registered(spec, cache_dir, force=force, include_checkpoint=include_checkpoint)


def _manifest_name(path: Path) -> str | None:
    try:
        raw = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(raw.get("name") or path.name) if isinstance(raw, dict) and raw.get("format") == FORMAT else None


def list_models(cache_dir: str | os.PathLike | None = None) -> list[ModelInfo]:
    """Registry entries (embedded default first) plus vssflow bundles found in the HF cache."""
    cache = hub.hub_cache_dir(cache_dir)
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
                path = hub.cached_snapshot(entry.repo, entry.revision, cache)
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
