"""Settings: one clear line on bad input; a persisted secret in dev; a required one in production."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import SettingsError, load_settings


def test_production_requires_a_secret_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AVATAR_BFF_SECRET_KEY is required"):
        load_settings(environment="production", data_dir=tmp_path, secret_key=None)


def test_invalid_value_gives_one_line_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environment="dev", data_dir=tmp_path, public_url="ftp://example")
    message = str(caught.value)
    assert "AVATAR_BFF_PUBLIC_URL" in message and "\n" not in message


def test_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="at least 32"):
        load_settings(environment="production", data_dir=tmp_path, secret_key="short")


def test_dev_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_settings(environment="dev", data_dir=tmp_path).secret
    second = load_settings(environment="dev", data_dir=tmp_path).secret
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_allowed_hosts_accept_a_comma_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_BFF_ALLOWED_UPSTREAM_HOSTS", "a.example, *.b.example")
    assert load_settings(environment="dev", data_dir=tmp_path).allowed_upstream_hosts == [
        "a.example",
        "*.b.example",
    ]


def test_default_database_is_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    url = load_settings(environment="dev", data_dir=tmp_path).effective_database_url
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'avatar-bff.db'}"


def test_production_server_requires_a_public_url(tmp_path: Path) -> None:
    # Finding 13: page URLs were built from the client's Host header; production names its own address.
    secret = "s" * 40
    with pytest.raises(SettingsError, match="AVATAR_BFF_PUBLIC_URL is required in production"):
        load_settings(environment="production", data_dir=tmp_path, secret_key=secret)
    load_settings(environment="production", data_dir=tmp_path, secret_key=secret, require_secret=False)
    load_settings(environment="dev", data_dir=tmp_path, secret_key=secret)  # dev derives it
