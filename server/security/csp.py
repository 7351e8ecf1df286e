"""The one place that decides what our security headers say.

Policies are built from plain data so each directive can be tested on its own.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

# Styles the Socket SDK 2.7.4 injects as <style> elements (captions, GenUI); see sdk.py for the pins.
NONCE_BYTES = 18


def new_nonce() -> str:
    return secrets.token_urlsafe(NONCE_BYTES)


@dataclass(frozen=True)
class PagePolicy:
    """What one page needs beyond our own origin. Empty means 'self' only."""

    script_urls: tuple[str, ...] = ()
    style_hashes: tuple[str, ...] = ()
    connect_origins: tuple[str, ...] = ()
    frame_origins: tuple[str, ...] = ()
    media_origins: tuple[str, ...] = ()
    frame_ancestors: tuple[str, ...] = ("'self'",)
    permission_delegates: tuple[str, ...] = field(default=())
    # Frames that may autoplay but get no microphone, camera or screen (GenUI videos from genui_origins).
    autoplay_delegates: tuple[str, ...] = field(default=())


log = logging.getLogger(__name__)

# What a source may look like: a quoted keyword/nonce/hash, a scheme, or an http(s) origin or exact URL.
# Anything else (a `;`, `,`, quote or space in stored data) could open a new directive: it is dropped.
_ORIGIN = r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
_CLEAN_SOURCE = re.compile(rf"'[A-Za-z0-9+/=_-]+'|[a-z][a-z0-9+.-]*:|{_ORIGIN}(?:/[A-Za-z0-9._~/@%+-]*)?")
_CLEAN_ORIGIN = re.compile(_ORIGIN)


def _clean(sources: Iterable[str], pattern: re.Pattern[str]) -> list[str]:
    kept = []
    for source in sources:
        if pattern.fullmatch(source):
            kept.append(source)
        else:
            log.warning("dropped a malformed policy source %r", source[:200])
    return kept


def _directive(name: str, sources: Iterable[str]) -> str:
    return " ".join([name, *dict.fromkeys(_clean(sources, _CLEAN_SOURCE))])  # de-duplicated, order kept


def build_csp(nonce: str, policy: PagePolicy) -> str:
    """Return the Content-Security-Policy header value for one response.

    Never emits 'unsafe-inline', 'unsafe-eval' or 'strict-dynamic': every script is either ours,
    carries the nonce, or is one exact pinned URL.
    """
    nonce_src = f"'nonce-{nonce}'"
    frames = policy.frame_origins or ("'none'",)
    directives = [
        "default-src 'none'",
        _directive("script-src", ["'self'", nonce_src, *policy.script_urls]),
        _directive("style-src", ["'self'", nonce_src, *policy.style_hashes]),
        _directive("connect-src", ["'self'", *policy.connect_origins]),
        _directive("img-src", ["'self'", "data:", "blob:", *policy.media_origins]),
        _directive("media-src", ["'self'", "blob:", "mediastream:", *policy.media_origins]),
        "font-src 'self'",
        _directive("frame-src", frames),
        "worker-src 'self' blob:",
        "manifest-src 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "form-action 'self'",
        _directive("frame-ancestors", policy.frame_ancestors or ("'self'",)),
    ]
    return "; ".join(directives)


POWERFUL_FEATURES = ("microphone", "camera", "autoplay", "display-capture")
DENIED_FEATURES = ("geolocation", "payment", "usb", "serial", "bluetooth", "hid", "midi")


def permissions_policy(delegates: Iterable[str] = (), autoplay_delegates: Iterable[str] = ()) -> str:
    """Allow mic/camera/autoplay/screen capture to our origin and the given frames, autoplay alone to
    `autoplay_delegates`; deny the rest."""

    def allowlist(origins: Iterable[str]) -> str:
        return " ".join(["self", *dict.fromkeys(f'"{o}"' for o in _clean(origins, _CLEAN_ORIGIN))])

    delegates = list(delegates)
    granted = [
        f"{feature}=({allowlist([*delegates, *autoplay_delegates] if feature == 'autoplay' else delegates)})"
        for feature in POWERFUL_FEATURES
    ]
    denied = [f"{feature}=()" for feature in DENIED_FEATURES]
    return ", ".join(granted + denied)


def baseline_headers(https: bool) -> dict[str, str]:
    """Headers every response gets, HTML or not."""
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if https:
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return headers
