"""The rows tests need, made through the services that make them in production wherever they can be.

Each function takes the `Database` it writes to and commits before it returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update

from server import api_tokens
from server.conversations import lifecycle
from server.conversations.page_token import issue_page_token
from server.db import Database
from server.flows import FlowsDocument, FlowSpec, TemplateSpec, export_document, import_document, page_flow
from server.models import ApiToken, Conversation, utcnow
from server.security.secrets_hashing import token_prefix
from server.security.signing import Signer
from server.transcripts.ingest import entry_rows, insert_entries


async def create_flow(
    db: Database,
    slug: str,
    allowed_hosts: Iterable[str] = (),
    template_body: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    """A flow imported as an operator would (`flows import`), with made-up Kaltura ids unless given; with
    `template_body`, a DPP template of the flow's name is imported with it and used by it."""
    templates = [] if template_body is None else [TemplateSpec(name=slug, body=template_body)]
    values: dict[str, Any] = {
        "display_name": slug.title(),
        "client_id": f"{slug}-client",
        "flow_id": f"{slug}-flow",
        **({"dpp_template": slug} if templates else {}),
        **fields,
    }
    document = FlowsDocument(dpp_templates=templates, flows=[FlowSpec(slug=slug, **values)])
    await import_document(db, document, list(allowed_hosts))


async def change_flow(db: Database, slug: str, **changes: Any) -> None:
    """Re-import an existing flow with some fields changed (e.g. `enabled=False`, `retention_days=30`)."""
    document = await export_document(db, [slug])
    (spec,) = document.flows
    changed = FlowSpec.model_validate({**spec.model_dump(), **changes})
    await import_document(db, document.model_copy(update={"flows": [changed]}), [])


@dataclass(frozen=True)
class StartedConversation:
    id: str
    token: str  # the page token that started it: what the page posts its transcript with


async def start_conversation(
    db: Database,
    signer: Signer,
    flow_slug: str = "demo",
    visitor: dict[str, str] | None = None,
    page_url: str = "http://127.0.0.1/a/demo",
) -> StartedConversation:
    """A conversation started as a visitor starts one: a page view's token, then the start its page makes."""
    _, version = await page_flow(db, flow_slug)
    conversation_id, token = issue_page_token(
        signer, flow_slug, version.id if version else None, visitor or {}, page_url, 3600
    )
    await start_with_token(db, signer, token, flow_slug)
    return StartedConversation(conversation_id, token)


async def start_with_token(
    db: Database, signer: Signer, token: str, flow_slug: str
) -> lifecycle.PageConversation:
    """Start the conversation a page token names, in either mode: the relay's join starts a Socket-mode one
    (and refuses an Iframe-mode token), an Iframe-mode page's admission or first transcript line the other."""
    async with db.transaction() as session:
        return await lifecycle.resolve_page_token(session, signer, token, flow_slug=flow_slug)


async def age_conversation(
    db: Database,
    conversation_id: str,
    *,
    created_at: datetime | None = None,
    last_activity_at: datetime | None = None,
    ended_at: datetime | None = None,
) -> None:
    """Move a conversation back in time: started, last heard from and (when `ended_at`) ended then.

    Time is the one thing no service can be asked to make pass; everything else goes through them.
    """
    async with db.transaction() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None, f"no conversation {conversation_id}"
        if ended_at is not None:
            lifecycle.end(conversation, "page_closed", ended_at)
        values = {"created_at": created_at, "last_activity_at": last_activity_at, "ended_at": ended_at}
        changes = {key: value for key, value in values.items() if value is not None}
        if changes:
            await session.execute(
                update(Conversation).where(Conversation.id == conversation_id).values(**changes)
            )


async def add_transcript_lines(
    db: Database, conversation_id: str, source: str, lines: Iterable[tuple[int, str, str, datetime]]
) -> None:
    """Transcript lines (seq, role, text, timestamp) stored as the relay tap or a page stores them."""
    rows = entry_rows(
        conversation_id,
        source,
        [{"seq": seq, "role": role, "text": text, "timestamp": at} for seq, role, text, at in lines],
    )
    async with db.transaction() as session:
        await insert_entries(session, rows)


async def create_api_token(db: Database, *scopes: str, name: str = "test", revoked: bool = False) -> str:
    """A REST API token with these scopes, as `create-token` makes one; returns the bearer secret."""
    token = await api_tokens.create_token(db, name, list(scopes))
    if revoked:
        async with db.transaction() as session:
            await session.execute(
                update(ApiToken).where(ApiToken.prefix == token_prefix(token)).values(revoked_at=utcnow())
            )
    return token
