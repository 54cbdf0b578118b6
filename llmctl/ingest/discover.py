"""Find the files to ingest under the given paths, with include/exclude globs.

The globs narrow what a run looks at. A file they take whose type llmctl cannot read is
reported as skipped ("unsupported type"), never silently dropped. A folder that cannot be
listed is reported as skipped (``CANNOT_LIST``): the files indexed under it are kept, since
only a listing that succeeded can tell that a file is gone.

Globs (gitignore-like): one without "/" matches a name -- the file's name for ``include``,
any file or folder name on the path for ``exclude``. One with "/" matches the path under the
ingested folder (a leading "/" changes nothing): ``*``, ``?`` and ``[...]`` stay within one
folder name, ``**`` spans any number of folders (``guides/**/*.md``, ``**/api/*.md``), and a
glob that matches a folder takes (or leaves out) everything in it.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmctl.config import IngestConfig
from llmctl.errors import InputError, printable
from llmctl.ingest.loaders import PLAIN, kind_of, sniff
from llmctl.records import SkippedFile


@dataclass(frozen=True)
class Found:
    path: Path  # absolute, resolved
    root: Path  # the ingest root it was found under


def _glob_match(parts: list[str], pat: list[str]) -> bool:
    """Path components against glob components; "**" stands for any number of components."""
    if not pat:
        return not parts
    if pat[0] == "**":
        return any(_glob_match(parts[i:], pat[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatch(parts[0], pat[0]) and _glob_match(parts[1:], pat[1:])


def _path_glob(rel: str, pat: str) -> bool:
    """A glob with "/" against a path under the root, or any folder above it."""
    pat_parts = [p for p in pat.strip("/").split("/") if p]
    parts = rel.split("/")
    return any(_glob_match(parts[:n], pat_parts) for n in range(1, len(parts) + 1))


def _matches(rel: str, patterns: list[str], *, name_only: bool = False) -> bool:
    """Whether a path under the root (POSIX) matches a glob: one with "/" the path (see the module
    docstring), one without the file name (``name_only``) or any name on the path."""
    parts = rel.split("/")
    names = parts[-1:] if name_only else parts
    for pat in patterns:
        if "/" in pat:
            if _path_glob(rel, pat):
                return True
        elif any(fnmatch.fnmatch(part, pat) for part in names):
            return True
    return False


def _taken(rel: str, cfg: IngestConfig) -> bool:
    """Whether the globs take the file at ``rel`` (POSIX, under the root)."""
    return not _matches(rel, cfg.exclude) and _matches(rel, cfg.include, name_only=True)


def is_taken(path: Path, root: Path, cfg: IngestConfig) -> bool:
    """Whether the globs take ``path`` (absolute) when ``root`` is ingested."""
    if path == root:
        return True  # named explicitly
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        return False
    return _taken(rel, cfg)


UNSUPPORTED = "unsupported type"
NOT_FOLLOWED = "symlink not followed (ingest.follow_symlinks)"
LEADS_OUT = "symlink points outside the ingest root"
# Left out by design or by the configuration, not bad input: --strict does not stop at them.
OUT_OF_SCOPE = (UNSUPPORTED, NOT_FOLLOWED, LEADS_OUT)
NOT_UTF8 = "its name is not valid UTF-8 (shown with \\x escapes): rename it, e.g. convmv -f latin1 -t utf-8"
CANNOT_LIST = "cannot list folder"  # the start of the reason: what is indexed under it is kept


def _utf8(name: str) -> bool:
    """A name the OS gave as bytes that are not UTF-8 holds surrogate escapes: the manifest,
    citations and JSON cannot carry it."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_paths(paths: list[Path], data_dir: Path | None = None) -> None:
    """Raise InputError for the first path that does not exist, or that is the data dir itself
    (its own files would be indexed: a data dir inside a folder is skipped, not one that is it)."""
    for given in paths:
        if not given.exists() and not given.is_symlink():
            raise InputError(f"Path {given} does not exist: check the path, relative to the folder llmctl runs in")
        if data_dir is not None and given.is_dir() and given.resolve() == data_dir.resolve():
            raise InputError(f"Path {given} is llmctl's data dir ({data_dir}): keep the index in a folder of its "
                             "own (--data-dir, data_dir; the default is .llmctl)")


def discover(paths: list[Path], cfg: IngestConfig, skipped: list[SkippedFile],
             ignore: Path | None = None) -> Iterator[Found]:
    """Yield files to ingest, sorted within each folder; record why others were passed over.

    A file named explicitly is taken whatever the include globs say. Symlinks are not
    followed unless ``follow_symlinks``; loops are detected either way. The folder
    ``ignore`` (llmctl's own data dir) is never walked into.
    """
    check_paths(paths)
    for given in paths:
        root = given.resolve() if given.exists() else given.absolute()
        if not _utf8(str(root)):
            skipped.append(SkippedFile(printable(str(root)), NOT_UTF8))
            continue
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
        skipped.append(SkippedFile(str(err.filename or root), f"{CANNOT_LIST}: {err.strerror or err}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=cfg.follow_symlinks, onerror=onerror):
        here = Path(dirpath)
        try:
            st = here.stat()
        except OSError as exc:  # gone or unreadable since it was listed
            onerror(exc)
            dirnames[:] = []
            continue
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
            if not _utf8(d):
                skipped.append(SkippedFile(printable(str(here / d)), NOT_UTF8))
                continue
            if (here / d).is_symlink() and not cfg.follow_symlinks:
                skipped.append(SkippedFile(str(here / d), NOT_FOLLOWED))
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not _taken(rel, cfg):
                continue
            path = here / name
            if not _utf8(name):
                skipped.append(SkippedFile(printable(str(path)), NOT_UTF8))
                continue
            kind = kind_of(path)
            if kind is None:
                skipped.append(SkippedFile(str(path), UNSUPPORTED))
                continue
            if path.is_symlink():
                if not cfg.follow_symlinks:
                    skipped.append(SkippedFile(str(path), NOT_FOLLOWED))
                    continue
                if not path.exists():
                    skipped.append(SkippedFile(str(path), "broken symlink"))
                    continue
                target = path.resolve()
                if not target.is_relative_to(root):
                    skipped.append(SkippedFile(str(path), LEADS_OUT))
                    continue
            if kind == PLAIN and not sniff(path):  # no extension: README is text, a program is not
                skipped.append(SkippedFile(str(path), UNSUPPORTED))
                continue
            yield Found(path.absolute(), root)
