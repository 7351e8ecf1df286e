"""Static files under content-hashed URLs: /static/v/<hash>/<path>, one hash for the whole tree.

One hash for the tree (not one per file) keeps the ES modules' relative imports inside the same version: a
module at /static/v/<hash>/js/a.js importing ./b.js asks for /static/v/<hash>/js/b.js.
"""

from __future__ import annotations

import hashlib
import os
from os import PathLike
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

PREFIX = "/static"
VERSIONED_PREFIX = "/static/v"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"  # unhashed URLs (and a stale hash after a deploy) may change any time


def tree_hash(directory: Path) -> str:
    """A hash of every file's path and bytes under `directory` (computed once, at startup)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class StaticAssets:
    """Maps a path under static/ to its hashed URL."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.version = tree_hash(directory)

    def url(self, path: str) -> str:
        """`css/page.css` or `/static/css/page.css` → `/static/v/<hash>/css/page.css`."""
        relative = path.removeprefix(PREFIX + "/").lstrip("/")
        return f"{VERSIONED_PREFIX}/{self.version}/{relative}"


class VersionedStaticFiles(StaticFiles):
    """Mounted at /static/v: the first path segment is the version, the rest a file under static/.

    The current version is cached for a year; any other still answers (a page rendered before a deploy) but
    with a short cache, since those bytes are not what that hash named.
    """

    def __init__(self, assets: StaticAssets) -> None:
        super().__init__(directory=assets.directory)
        self.version = assets.version

    def get_path(self, scope: Scope) -> str:
        path = super().get_path(scope)
        version, _, rest = path.partition(os.sep)
        scope["avatar_static_version"] = version
        return rest or "."

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        current = scope.get("avatar_static_version") == self.version
        response.headers["Cache-Control"] = IMMUTABLE if current else SHORT
        return response


class ShortCacheStaticFiles(StaticFiles):
    """The unhashed /static URLs: cacheable for minutes, revalidated after."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = SHORT
        return response
