"""A Hugging Face cache written on disk in huggingface_hub's own layout, so that repo ids resolve offline
(HF_HUB_OFFLINE=1) from local files: what a `snapshot_download` of each repo would have left there.

    CACHE/models--ORG--NAME/blobs/SHA256                       each file's content
    CACHE/models--ORG--NAME/snapshots/COMMIT/PATH -> ../../blobs/SHA256
    CACHE/models--ORG--NAME/refs/main                          COMMIT (the revision a repo id resolves to)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path


def add_to_cache(cache: Path, repo_id: str, files: Mapping[str, bytes | Path], revision: str = "main") -> Path:
    """Put `files` (repo path -> content, or a file to copy) into `cache` as the snapshot of model repo `repo_id`
    at `revision` (a branch name, as `refs/` records it). The commit id hashes the contents. Returns the snapshot
    folder."""
    contents = {name: data if isinstance(data, bytes) else Path(data).read_bytes() for name, data in files.items()}
    digest = hashlib.sha1()
    for name in sorted(contents):
        digest.update(name.encode() + b"\0" + hashlib.sha256(contents[name]).digest())
    commit = digest.hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for name, data in contents.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snapshot


def directory_files(directory: Path, names: list[str] | None = None) -> dict[str, Path]:
    """The files of `directory` (all, or those `names`) as `add_to_cache` takes them."""
    names = names if names is not None else sorted(p.name for p in directory.iterdir() if p.is_file())
    return {name: directory / name for name in names}
