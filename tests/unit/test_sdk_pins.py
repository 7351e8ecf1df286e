"""Vendoring the Kaltura SDK: every byte checked against the pinned integrity hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.sdk import PINS, SdkError, integrity_of, pin_for, script_source, vendor


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_tampered_file_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    source = tmp_path / "checkout"
    for pin in PINS.values():
        (source / pin.repo_path).parent.mkdir(parents=True, exist_ok=True)
        (source / pin.repo_path).write_text("alert('not the SDK')")
    with pytest.raises(SdkError, match="integrity mismatch"):
        vendor("v2.7.4", tmp_path / "sdk", source)
    assert not (tmp_path / "sdk").exists()


def test_missing_checkout_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SdkError, match="not found"):
        vendor("v2.7.4", tmp_path / "sdk", tmp_path / "empty")


def test_unknown_version_is_refused() -> None:
    with pytest.raises(SdkError, match="no pinned"):
        pin_for("v0.0.1", "socket")


def test_pages_prefer_a_self_hosted_copy(tmp_path: Path) -> None:
    pin = pin_for("v2.7.4", "socket")
    assert script_source(pin, tmp_path).from_cdn
    (tmp_path / "v2.7.4").mkdir()
    (tmp_path / "v2.7.4" / pin.file_name).write_text("x")
    local = script_source(pin, tmp_path)
    assert not local.from_cdn and local.src.startswith("/static/sdk/") and local.integrity == pin.integrity


def test_integrity_format() -> None:
    assert integrity_of(b"") == "sha384-OLBgp1GsljhM2TJ+sbHjaiH9txEUvgdDTAzHv2P24donTt6/529l+9Ua0vFImLlb"
