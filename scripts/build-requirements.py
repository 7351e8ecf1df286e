"""Print the lines of a lock that pin the build backend ([build-system] requires in pyproject.toml) and what
it needs, hashes included: the Dockerfile builds the wheel with the backend `make setup` installs.

Usage: python scripts/build-requirements.py requirements/dev.lock > build.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")
VIA = re.compile(r"#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def blocks(lock: str) -> dict[str, tuple[list[str], set[str]]]:
    """Each pinned package: its lines (pin, hashes, comments) and the packages it is there for."""
    found: dict[str, tuple[list[str], set[str]]] = {}
    current: tuple[list[str], set[str]] | None = None
    for line in lock.splitlines():
        pin = PIN.match(line)
        if pin:
            current = found[canonical(pin.group(1))] = ([line], set())
        elif current is not None and line.startswith(" "):
            current[0].append(line)
            via = VIA.search(line)
            if via and not line.strip().startswith("#   -c"):
                current[1].add(canonical(via.group(1)))
    return found


def backend_requirements(lock: str, pyproject: str) -> list[str]:
    roots = {canonical(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in _requires(pyproject)}
    pinned = blocks(lock)
    missing = roots - pinned.keys()
    if missing:
        raise SystemExit(f"the lock does not pin the build backend: {', '.join(sorted(missing))}")
    wanted = set(roots)
    while True:  # whatever is there for something wanted is wanted too
        more = {name for name, (_, via) in pinned.items() if via & wanted} - wanted
        if not more:
            break
        wanted |= more
    return [line for name in sorted(wanted) for line in pinned[name][0]]


def _requires(pyproject: str) -> list[str]:
    return list(tomllib.loads(pyproject)["build-system"]["requires"])


def main() -> None:
    lock = Path(sys.argv[1]).read_text()
    print("\n".join(backend_requirements(lock, (ROOT / "pyproject.toml").read_text())))


if __name__ == "__main__":
    main()
