"""Logging is configured from settings: JSON lines in production, readable lines in dev, nothing secret."""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.logs import logging_config, redact_path
from tests.support import make_settings

PUBLIC_URL = "https://avatars.example.com"  # production requires it

TOKEN = "eyJzaWQiOiJhYmMiLCJmbG93IjoiZGVtbyJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = ["avatar_bff", "uvicorn", "uvicorn.access", ""]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    saved_filters = logging.getLogger("uvicorn.access").filters[:]
    yield
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.level = handlers, level
        logger.propagate = True
    logging.getLogger("uvicorn.access").filters = saved_filters


def test_production_logs_json_lines_at_the_configured_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    settings = make_settings(tmp_path, environment="production", public_url=PUBLIC_URL, log_level="warning")
    logging.config.dictConfig(logging_config(settings))
    logging.getLogger("avatar_bff.relay").info("not shown below the configured level")
    logging.getLogger("avatar_bff.relay").warning("upstream for flow %s did not answer", "demo")
    (line,) = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "avatar_bff.relay"
    assert entry["message"] == "upstream for flow demo did not answer"


def test_dev_logs_readable_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logging.config.dictConfig(logging_config(make_settings(tmp_path, environment="dev")))
    logging.getLogger("avatar_bff.housekeeping").info("housekeeping: 2 idle conversation(s) ended")
    err = capsys.readouterr().err
    assert "INFO" in err and "avatar_bff.housekeeping: housekeeping: 2 idle" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err)


def test_access_log_keeps_no_token_and_no_visitor_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logging.config.dictConfig(
        logging_config(make_settings(tmp_path, environment="production", public_url=PUBLIC_URL))
    )
    access = logging.getLogger("uvicorn.access")
    path = f"/relay/iframe/clients/{TOKEN}/flow/demo/sdk-assets?first_name=Ana&email=ana%40example.com"
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200)
    message = json.loads(capsys.readouterr().err)["message"]
    assert message == '127.0.0.1:5000 - "GET /relay/iframe/clients/…/flow/demo/sdk-assets HTTP/1.1" 200'


def test_websocket_lines_keep_no_engine_io_session_or_page_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logging.config.dictConfig(
        logging_config(make_settings(tmp_path, environment="production", public_url=PUBLIC_URL))
    )
    path = f"/socket.io/?client={TOKEN}&flowId=demo&EIO=4&transport=websocket&sid=Qm9vbV9zaWQ"
    logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", path)
    message = json.loads(capsys.readouterr().err)["message"]
    assert message == '127.0.0.1:5000 - "WebSocket /socket.io/" [accepted]'


def test_redact_path_masks_signed_tokens_only() -> None:
    assert redact_path(f"/relay/whep/{TOKEN}") == "/relay/whep/…"
    assert redact_path("/a/demo?first_name=Ana") == "/a/demo"
    assert (
        redact_path("/static/vendor/socket.io/socket.io.min.js")
        == "/static/vendor/socket.io/socket.io.min.js"
    )
