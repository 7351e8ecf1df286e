"""The data model: flows, DPP templates and immutable versions, conversations, transcripts, admins, tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column, relationship

SDK_MODES = ("socket", "iframe")
UPSTREAMS = ("kaltura-us", "kaltura-eu", "simulator", "custom")
ROLES = ("Avatar", "User")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+00:01 is valid ISO 8601 but has no UTC datetime
        raise ValueError("is outside the range of dates (years 1 to 9999 in UTC)") from None


# A time someone gave us (API filter, page timestamp): any ISO 8601 time with an offset, kept in UTC.
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DppTemplate(Base):
    """A named Dynamic Page Prompt template; its content lives in immutable versions.

    Flows serve the *published* version: publishing and rolling back move this pointer, never edit a version.
    """

    __tablename__ = "dpp_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    published_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    versions: Mapped[list[DppTemplateVersion]] = relationship(
        back_populates="template", order_by="DppTemplateVersion.version", cascade="all, delete-orphan"
    )


class DppTemplateVersion(Base):
    """One immutable revision of a template: JSON whose string values are sandboxed Jinja2."""

    __tablename__ = "dpp_template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("dpp_templates.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[Any] = mapped_column(JSON)
    # [{name, type, required, default, example, source}]: what the template expects of a visitor.
    variables: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # A JSON Schema (draft 2020-12) the rendered DPP must satisfy.
    dpp_schema: Mapped[dict[str, Any] | None] = mapped_column("schema", JSON, nullable=True)
    author: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    template: Mapped[DppTemplate] = relationship(back_populates="versions")


@event.listens_for(DppTemplateVersion, "before_update")
def _versions_are_immutable(_mapper: Mapper[Any], _conn: Any, target: DppTemplateVersion) -> None:
    raise ValueError(f"DPP template version {target.id} is immutable; save a new version instead")


class Flow(Base):
    """A Kaltura avatar flow and how we present it."""

    __tablename__ = "flows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    client_id: Mapped[str] = mapped_column(String(200))
    flow_id: Mapped[str] = mapped_column(String(200))
    sdk_mode: Mapped[str] = mapped_column(String(16), default="socket")
    upstream: Mapped[str] = mapped_column(String(32), default="kaltura-us")
    custom_endpoints: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    sdk_version: Mapped[str] = mapped_column(String(32), default="v2.7.4")
    genui_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    spoken_commands: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    turn_override: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # {max_bytes, per_minute}: the page may send live context itself; None: only the server's DPP.
    page_context: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    # server.sdk_options.SdkOptions as JSON; None (flows from before): the SDK's defaults.
    sdk_options: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    genui_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    dpp_template_id: Mapped[int | None] = mapped_column(
        ForeignKey("dpp_templates.id", ondelete="SET NULL"), nullable=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: keep forever
    # Session budget (server.flows.FlowSpec); None: no limit of that kind.
    max_duration_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    idle_cut_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    minutes_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    dpp_template: Mapped[DppTemplate | None] = relationship()


GLOBAL_SWITCH = "global"  # the kill switch of every flow; a flow's is "flow:<id>"


class KillSwitch(Base):
    """An engaged kill switch (a row exists while it is on): live conversations end, new ones are refused.

    Operational state, not configuration: it is not part of the flows import/export format.
    """

    __tablename__ = "kill_switches"

    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    flow_id: Mapped[int | None] = mapped_column(
        ForeignKey("flows.id", ondelete="CASCADE"), nullable=True, unique=True
    )
    engaged_by: Mapped[str] = mapped_column(String(254))
    engaged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConversationStatus(StrEnum):
    """A conversation is active from its first relayed connect or transcript line until it ends."""

    ACTIVE = "active"
    ENDED = "ended"


class Conversation(Base):
    """One visitor conversation on a hosted page (the REST API calls it a session).

    Written when the conversation starts, never on a page view; `server.conversations` owns every change.
    """

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_flow_created", "flow_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    flow_id: Mapped[int] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"))
    template_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dpp_template_versions.id", ondelete="SET NULL"), nullable=True
    )
    rendered_dpp: Mapped[Any] = mapped_column(JSON, nullable=True)
    # What the page itself sent as live context (flows with `page_context`): [{at, message}], in order.
    page_contexts: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    visitor_context: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Started from an admin's preview link (a draft template): kept out of the flow's statistics.
    preview: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[ConversationStatus] = mapped_column(
        Enum(
            ConversationStatus,
            native_enum=False,
            create_constraint=False,
            length=16,
            values_callable=lambda statuses: [s.value for s in statuses],
        ),
        default=ConversationStatus.ACTIVE,
    )
    end_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    flow: Mapped[Flow] = relationship()


class ErasedConversation(Base):
    """A conversation erased while its page's token may still be live: that token never starts it again."""

    __tablename__ = "erased_conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConversationEvent(Base):
    """One step of a conversation's diagnostics timeline (connects, refusals, WHEP, errors, end).

    Recorded by the relay and the pages as it happens; never holds transcript text.
    """

    __tablename__ = "conversation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None: a refusal before any conversation started (a capacity refusal), kept on its flow instead.
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True, nullable=True
    )
    flow_id: Mapped[int | None] = mapped_column(
        ForeignKey("flows.id", ondelete="CASCADE"), index=True, nullable=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TranscriptEntry(Base):
    """One line of a conversation, as reported by one source (the page or the relay tap)."""

    __tablename__ = "transcript_entries"
    __table_args__ = (UniqueConstraint("conversation_id", "source", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))
    # 0-100, on User lines: the Iframe SDK scores how the visitor pronounced what they said.
    pronunciation_score: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)


ADMIN_ROLES = ("admin", "viewer")  # admin changes things; viewer reads only


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AdminSession(Base):
    """A signed-in admin console session; the cookie holds the secret, the table only its hash."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's secret
    admin_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    admin: Mapped[AdminUser] = relationship()


class AuditEntry(Base):
    """Who changed which flow, template, token or account, when, and what (secrets masked)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(40))
    target_type: Mapped[str] = mapped_column(String(20))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)


class ApiToken(Base):
    """A bearer token for the REST API; only a hash of the secret part is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
