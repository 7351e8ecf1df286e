"""Where each flow's upstream lives: the Kaltura regions, the local simulator, or custom endpoints."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Endpoints:
    socket: str  # Socket.IO origin of the conversation service
    whep: str  # WHEP base, used when the service sends no per-session URL
    api: str  # Iframe SDK API base (sdk-assets)
    meet: str  # Iframe SDK meeting page origin


def _kaltura(region: str) -> Endpoints:
    return Endpoints(
        socket=f"https://conversation.avatar.{region}.kaltura.ai",
        whep=f"https://srs.avatar.{region}.kaltura.ai",
        api=f"https://api.avatar.{region}.kaltura.ai",
        meet=f"https://meet.avatar.{region}.kaltura.ai",
    )


KALTURA = {"kaltura-us": _kaltura("us"), "kaltura-eu": _kaltura("eu")}
ENDPOINT_FIELDS = ("socket", "whep", "api", "meet")


def endpoints_for(upstream: str, custom: dict[str, str] | None, simulator_url: str) -> Endpoints:
    """Resolve a flow's upstream name (and custom endpoints) to concrete URLs."""
    if upstream in KALTURA:
        return KALTURA[upstream]
    if upstream == "simulator":
        return Endpoints(simulator_url, simulator_url, simulator_url, simulator_url)
    if upstream == "custom" and custom:
        return Endpoints(**{name: custom[name].rstrip("/") for name in ENDPOINT_FIELDS})
    raise ValueError(f"unknown upstream {upstream!r}")


# scheme://host[:port] and nothing else: these strings end up in CSP and Permissions-Policy headers, where a
# `;`, `,`, quote or space would start a new directive, and the relay's host check reads only the real host.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ORIGIN = re.compile(rf"(https?)://((?:{_LABEL})(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?")


def clean_origin(value: str) -> str | None:
    """The origin in lower case when `value` is exactly scheme://host[:port] (http or https), else None."""
    match = _ORIGIN.fullmatch(value)
    if match is None or len(value) > 300:
        return None
    port = match.group(3)
    if port is not None and not 0 < int(port) < 65536:
        return None
    return value.lower()


def relay_allowed_hosts(allowed: list[str], simulator_url: str) -> list[str]:
    """Hosts the relay may reach: the configured patterns plus the local simulator."""
    return [*allowed, urlsplit(simulator_url).netloc]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def host_allowed(url: str, patterns: list[str]) -> bool:
    """True when the URL is http(s) and its host (or host:port) matches one of the glob patterns."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return False  # userinfo: the host a reader sees first is not the one connected to
    host = parts.hostname.lower()
    netloc = f"{host}:{parts.port}" if parts.port else host
    return any(
        fnmatch.fnmatchcase(netloc, p.lower()) or fnmatch.fnmatchcase(host, p.lower()) for p in patterns
    )
