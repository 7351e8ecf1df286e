"""The pinned Kaltura SDK builds: where pages load them from, and `vendor-sdk` to self-host them.

The SDKs are not on any package registry; they are files in a public git repository served by jsDelivr.
We pin one tag and the exact files, and check every byte against a sha384 integrity hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

CDN_BASE = "https://cdn.jsdelivr.net/gh/kaltura/conversational-avatar-embed-sdk@"
DEFAULT_SDK_VERSION = "v2.7.4"
SELF_HOSTED_URL_PREFIX = "/static/sdk"


@dataclass(frozen=True)
class SdkPin:
    mode: str  # "socket" | "iframe"
    version: str  # git tag
    repo_path: str  # path of the file inside the repository at that tag
    size: int
    integrity: str  # sha384-<base64>

    @property
    def cdn_url(self) -> str:
        return f"{CDN_BASE}{self.version}/{self.repo_path}"

    @property
    def file_name(self) -> str:
        return f"{self.mode}-{Path(self.repo_path).name}"

    @property
    def self_hosted_url(self) -> str:
        return f"{SELF_HOSTED_URL_PREFIX}/{self.version}/{self.file_name}"


PINS: dict[tuple[str, str], SdkPin] = {
    ("v2.7.4", "socket"): SdkPin(
        "socket",
        "v2.7.4",
        "sdk-socket/dist/kaltura-avatar-sdk.js",
        173468,
        "sha384-EO8gbbpHO3S7ADapRTVqtD2IvTgj+/ZIO6AJ9Qrr3IfH4fpjk/Pas/v68pboZcjx",
    ),
    ("v2.7.4", "iframe"): SdkPin(
        "iframe",
        "v2.7.4",
        "sdk-iframe/kaltura-avatar-sdk.js",
        16313,
        "sha384-g5PcxoA+l2+2eoVJFAihsXBFpcvgpHeGxc8oUwYkyKbEDIYgDqB+hvfyCNF0+sPK",
    ),
}

# CSP hashes of the two <style> elements the Socket SDK injects (captions, GenUI), per version.
SOCKET_STYLE_HASHES: dict[str, tuple[str, ...]] = {
    "v2.7.4": (
        "'sha256-IH5Ndxg07H1Vllt57d6RnKYyzLDzYvq6kyFvy1zXTBU='",
        "'sha256-K9GTpSlDUeA64bVR0MwA69HJx5rZ2U7gMgkSvkVAWR8='",
    ),
}

SUPPORTED_VERSIONS = tuple(sorted({version for version, _ in PINS}))


class SdkError(Exception):
    """Vendoring failed; the message names the file and the reason."""


def pin_for(version: str, mode: str) -> SdkPin:
    try:
        return PINS[(version, mode)]
    except KeyError:
        raise SdkError(f"no pinned {mode} SDK for version {version!r}; known: {SUPPORTED_VERSIONS}") from None


def integrity_of(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@dataclass(frozen=True)
class ScriptSource:
    """How a page includes the SDK: a URL plus its integrity hash, and whether it leaves our origin."""

    src: str
    integrity: str
    from_cdn: bool


def script_source(pin: SdkPin, sdk_dir: Path) -> ScriptSource:
    """Self-hosted when `vendor-sdk` stored the file, else the pinned CDN URL."""
    if (sdk_dir / pin.version / pin.file_name).is_file():
        return ScriptSource(pin.self_hosted_url, pin.integrity, from_cdn=False)
    return ScriptSource(pin.cdn_url, pin.integrity, from_cdn=True)


def cache_dir() -> Path:
    """A per-user download cache, keyed by content hash, so re-vendoring works offline."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avatar-bff" / "sdk"


def _cache_path(pin: SdkPin) -> Path:
    return cache_dir() / (hashlib.sha256(pin.integrity.encode()).hexdigest()[:32] + ".js")


def cached_bytes(pin: SdkPin) -> bytes | None:
    """The verified file from the download cache, or None."""
    path = _cache_path(pin)
    if path.is_file():
        data = path.read_bytes()
        if integrity_of(data) == pin.integrity:
            return data
    return None


def _download(pin: SdkPin) -> bytes:
    try:
        response = httpx.get(pin.cdn_url, timeout=30, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise SdkError(f"could not download {pin.cdn_url}: {exc}") from None
    return response.content


def fetch_pinned(pin: SdkPin, source_dir: Path | None = None) -> bytes:
    """Bytes of a pinned file from the cache, a local checkout of the SDK repository, or the CDN.

    Whatever the origin, the bytes must match the pinned integrity hash.
    """
    data = cached_bytes(pin)
    if data is None:
        if source_dir is not None:
            path = source_dir / pin.repo_path
            if not path.is_file():
                raise SdkError(
                    f"{path} not found (expected a checkout of the SDK repository at {pin.version})"
                )
            data = path.read_bytes()
        else:
            data = _download(pin)
        actual = integrity_of(data)
        if actual != pin.integrity:
            raise SdkError(f"{pin.repo_path}: integrity mismatch (expected {pin.integrity}, got {actual})")
        _cache_path(pin).parent.mkdir(parents=True, exist_ok=True)
        _cache_path(pin).write_bytes(data)
    return data


def vendor(
    version: str, sdk_dir: Path, source_dir: Path | None = None, report: Callable[[str], None] = print
) -> list[Path]:
    """Store every pinned file of `version` under sdk_dir so pages serve them from our origin."""
    pins = [pin for (pinned_version, _mode), pin in sorted(PINS.items()) if pinned_version == version]
    if not pins:
        raise SdkError(f"no pinned SDK files for version {version!r}; known: {SUPPORTED_VERSIONS}")
    verified = [(pin, fetch_pinned(pin, source_dir)) for pin in pins]  # all verified before any is stored
    stored = []
    for pin, data in verified:
        target = sdk_dir / pin.version / pin.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        report(f"stored {pin.mode} SDK {version} ({len(data)} bytes, {pin.integrity}) at {target}")
        stored.append(target)
    return stored
