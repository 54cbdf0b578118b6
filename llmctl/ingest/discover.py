"""Find the files to ingest under the given paths, with include/exclude globs.

The globs narrow what a run looks at. A file they take whose type llmctl cannot read is
reported as skipped ("unsupported type"), never silently dropped.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmctl.config import IngestConfig
from llmctl.errors import InputError
from llmctl.ingest.loaders import kind_of
from llmctl.records import SkippedFile


@dataclass(frozen=True)
class Found:
    path: Path  # absolute, resolved
    root: Path  # the ingest root it was found under


def _matches(rel: str, patterns: list[str]) -> bool:
    """gitignore-like: a pattern without '/' matches any path component; else the whole path."""
    parts = rel.split("/")
    for pat in patterns:
        if "/" in pat:
            if fnmatch.fnmatch(rel, pat.strip("/")) or fnmatch.fnmatch(rel, pat.strip("/") + "/*"):
                return True
        elif any(fnmatch.fnmatch(part, pat) for part in parts):
            return True
    return False


def is_taken(path: Path, root: Path, cfg: IngestConfig) -> bool:
    """Whether the globs take ``path`` (absolute) when ``root`` is ingested."""
    if path == root:
        return True  # named explicitly
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        return False
    folders = rel.split("/")[:-1]
    if any(_matches("/".join(folders[:i + 1]), cfg.exclude) for i in range(len(folders))):
        return False
    return not _matches(rel, cfg.exclude) and _matches(path.name, cfg.include)


UNSUPPORTED = "unsupported type"


def discover(paths: list[Path], cfg: IngestConfig, skipped: list[SkippedFile],
             ignore: Path | None = None) -> Iterator[Found]:
    """Yield files to ingest, sorted within each folder; record why others were passed over.

    A file named explicitly is taken whatever the include globs say. Symlinks are not
    followed unless ``follow_symlinks``; loops are detected either way. The folder
    ``ignore`` (llmctl's own data dir) is never walked into.
    """
    for given in paths:
        if not given.exists() and not given.is_symlink():
            raise InputError(f"Path {given} does not exist: check the path given to 'llmctl ingest'")
        root = given.resolve() if given.exists() else given.absolute()
        if given.is_file():
            yield Found(root, root.parent)
            continue
        if not given.is_dir():
            skipped.append(SkippedFile(str(given), "not a regular file or folder (broken link?)"))
            continue
        yield from _walk(root, cfg, skipped, ignore.resolve() if ignore else None)


def _walk(root: Path, cfg: IngestConfig, skipped: list[SkippedFile], ignore: Path | None) -> Iterator[Found]:
    seen_dirs: set[tuple[int, int]] = set()

    def onerror(err: OSError) -> None:
        skipped.append(SkippedFile(str(err.filename), f"cannot list folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=cfg.follow_symlinks, onerror=onerror):
        here = Path(dirpath)
        st = here.stat()
        if (st.st_dev, st.st_ino) in seen_dirs:
            skipped.append(SkippedFile(str(here), "symlink loop: folder already visited"))
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        rel_dir = here.relative_to(root).as_posix()
        keep = []
        for d in sorted(dirnames):
            rel = d if rel_dir == "." else f"{rel_dir}/{d}"
            if _matches(rel, cfg.exclude) or (here / d) == ignore:
                continue
            if (here / d).is_symlink() and not cfg.follow_symlinks:
                skipped.append(SkippedFile(str(here / d), "symlink not followed (ingest.follow_symlinks)"))
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if _matches(rel, cfg.exclude) or not _matches(name, cfg.include):
                continue
            path = here / name
            if kind_of(path) is None:
                skipped.append(SkippedFile(str(path), UNSUPPORTED))
                continue
            if path.is_symlink():
                if not cfg.follow_symlinks:
                    skipped.append(SkippedFile(str(path), "symlink not followed (ingest.follow_symlinks)"))
                    continue
                if not path.exists():
                    skipped.append(SkippedFile(str(path), "broken symlink"))
                    continue
                target = path.resolve()
                if not target.is_relative_to(root):
                    skipped.append(SkippedFile(str(path), "symlink points outside the ingest root"))
                    continue
            yield Found(path.absolute(), root)
