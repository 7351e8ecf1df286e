"""Flow definitions: validation, import/export as JSON, and the demo flows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from server import audit
from server.db import Database
from server.dpp.checks import TemplateInvalid, check_template
from server.errors import InvalidField, NotFound
from server.models import Conversation, DppTemplate, DppTemplateVersion, Flow, TranscriptEntry
from server.sdk import DEFAULT_SDK_VERSION, SUPPORTED_VERSIONS
from server.sdk_options import SdkOptions, SpokenCommand, stored_options
from server.upstreams import ENDPOINT_FIELDS, clean_origin, host_allowed

SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"
IMPORT_ACTOR = "command line"  # who `flows import` changes things as, in the audit log
END_PHRASE = "Ending call now."


def _check_origin(value: str) -> str:
    origin = clean_origin(value)
    if origin is None:
        raise ValueError(f"{value!r} is not an origin like https://example.com")
    return origin


class PageContext(BaseModel):
    """Live context the page may send the avatar (a `setDynamicPrompt` of its own), within these limits.

    Off unless a flow sets it: the avatar's prompt is the server-rendered DPP, which the relay injects.
    """

    model_config = ConfigDict(extra="forbid")
    max_bytes: int = Field(default=8192, ge=1, le=1024 * 1024)
    per_minute: int = Field(default=6, ge=1, le=600)


class TurnOverride(BaseModel):
    """ICE servers for the avatar's media instead of the region's own; an override names at least one URL
    (an empty list reaches the browser as-is and breaks every peer connection)."""

    model_config = ConfigDict(extra="forbid")
    urls: list[str] = Field(min_length=1, max_length=8)
    username: str | None = None
    credential: str | None = None
    iceTransportPolicy: Literal["all", "relay"] = "relay"

    @field_validator("urls")
    @classmethod
    def _ice_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
        return urls


class TemplateSpec(BaseModel):
    """A DPP template: its body, the visitor variables it declares, and the JSON Schema its DPP must meet."""

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )
    name: str = Field(min_length=1, max_length=120)
    description: str = ""
    body: dict[str, Any]
    variables: list[dict[str, Any]] = Field(default_factory=list)
    # "schema" in the document; named otherwise here because BaseModel has a `schema` of its own.
    dpp_schema: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _checks(self) -> TemplateSpec:
        try:
            checked = check_template(self.body, self.variables, self.dpp_schema)
        except TemplateInvalid as exc:
            raise ValueError(f"template {self.name!r}: {exc}") from None
        self.variables = checked.variables
        return self


class FlowSpec(BaseModel):
    """Everything an operator sets for one flow; the import/export format."""

    model_config = ConfigDict(extra="forbid")
    slug: str = Field(pattern=SLUG)
    display_name: str = Field(min_length=1, max_length=200)
    client_id: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    flow_id: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    sdk_mode: Literal["socket", "iframe"] = "socket"
    upstream: Literal["kaltura-us", "kaltura-eu", "simulator", "custom"] = "kaltura-us"
    custom_endpoints: dict[str, str] | None = None
    sdk_version: str = DEFAULT_SDK_VERSION
    genui_enabled: bool = True
    spoken_commands: list[SpokenCommand] = Field(
        default_factory=lambda: [SpokenCommand(phrase=END_PHRASE)], max_length=20
    )
    turn_override: TurnOverride | None = None
    page_context: PageContext | None = None
    sdk_options: SdkOptions = Field(default_factory=SdkOptions)
    allowed_origins: list[str] = Field(default_factory=list, max_length=20)
    genui_origins: list[str] = Field(default_factory=list, max_length=20)
    dpp_template: str | None = None
    enabled: bool = True
    retention_days: int | None = Field(default=None, ge=1, le=3650)
    # Session budget; None: no limit of that kind. The relay enforces it across instances.
    max_duration_seconds: int | None = Field(default=None, ge=1, le=24 * 3600)
    idle_cut_seconds: int | None = Field(default=None, ge=1, le=24 * 3600)
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000)
    minutes_per_day: int | None = Field(default=None, ge=1, le=10_000_000)

    @field_validator("allowed_origins", "genui_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        return [_check_origin(v) for v in values]

    @field_validator("sdk_version")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if value not in SUPPORTED_VERSIONS:
            raise ValueError(f"SDK version {value!r} is not pinned; known: {', '.join(SUPPORTED_VERSIONS)}")
        return value

    @model_validator(mode="after")
    def _custom_endpoints(self) -> FlowSpec:
        if self.upstream == "custom":
            missing = [f for f in ENDPOINT_FIELDS if not (self.custom_endpoints or {}).get(f)]
            if missing:
                raise ValueError(f"upstream 'custom' needs custom_endpoints: {', '.join(missing)}")
            for name, url in (self.custom_endpoints or {}).items():
                if name not in ENDPOINT_FIELDS:
                    raise ValueError(f"custom_endpoints.{name}: not one of {', '.join(ENDPOINT_FIELDS)}")
                if clean_origin(url) is None:
                    raise ValueError(
                        f"custom_endpoints.{name}: {url!r} is not a bare origin like https://host[:port]"
                        " (no user, path, query or fragment)"
                    )
        elif self.custom_endpoints:
            raise ValueError("custom_endpoints is only allowed with upstream 'custom'")
        return self


class FlowsDocument(BaseModel):
    """The JSON file `avatar-bff flows import` reads and `flows export` writes."""

    model_config = ConfigDict(extra="forbid")
    dpp_templates: list[TemplateSpec] = Field(default_factory=list)
    flows: list[FlowSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> FlowsDocument:
        slugs = [f.slug for f in self.flows]
        if len(slugs) != len(set(slugs)):
            raise ValueError("a flow slug appears twice")
        return self


class FlowImportError(Exception):
    """The document is valid JSON but cannot be applied; nothing was written."""


def check_upstream_hosts(spec: FlowSpec, allowed: list[str]) -> None:
    if spec.upstream == "custom":
        for name, url in (spec.custom_endpoints or {}).items():
            if not host_allowed(url, allowed):
                raise FlowImportError(
                    f"flow {spec.slug!r}: custom_endpoints.{name} host is not in"
                    " AVATAR_BFF_ALLOWED_UPSTREAM_HOSTS"
                )


async def latest_version(db: AsyncSession, template_id: int) -> DppTemplateVersion | None:
    result = await db.execute(
        select(DppTemplateVersion)
        .where(DppTemplateVersion.template_id == template_id)
        .order_by(DppTemplateVersion.version.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def published_version(db: AsyncSession, template_id: int) -> DppTemplateVersion | None:
    """The version flows serve: the one the template's pointer names (admins move it)."""
    return await db.scalar(
        select(DppTemplateVersion)
        .join(DppTemplate, DppTemplate.id == DppTemplateVersion.template_id)
        .where(
            DppTemplateVersion.template_id == template_id,
            DppTemplateVersion.version == DppTemplate.published_version,
        )
    )


async def page_flow(db: Database, slug: str) -> tuple[Flow, DppTemplateVersion | None]:
    """An enabled flow and the published version of its DPP template, for its hosted page."""
    async with db.reading() as session:
        flow = await session.scalar(select(Flow).where(Flow.slug == slug, Flow.enabled))
        if flow is None:
            raise NotFound("unknown_flow", "There is no avatar page at this address.")
        version = await published_version(session, flow.dpp_template_id) if flow.dpp_template_id else None
    return flow, version


def version_content(version: DppTemplateVersion) -> tuple[Any, list[dict[str, Any]], Any]:
    """What makes two versions the same: body, variables and schema."""
    return version.body, version.variables or [], version.dpp_schema


async def preview_flow(db: Database, slug: str, version_id: int) -> tuple[Flow, DppTemplateVersion]:
    """An enabled flow and an explicit template version (an admin trying a draft on it)."""
    async with db.reading() as session:
        flow = await session.scalar(select(Flow).where(Flow.slug == slug, Flow.enabled))
        if flow is None:
            raise NotFound("unknown_flow", f"There is no enabled flow {slug!r} to try the template on.")
        version = await session.get(DppTemplateVersion, version_id)
        if version is None:
            raise NotFound("unknown_version", "This template version no longer exists.")
    return flow, version


async def save_template(db: AsyncSession, spec: TemplateSpec, author: str = "") -> DppTemplate:
    """Publish this content: an import is a deployment. A template already serving it is left alone; an
    existing version with it is published; otherwise it becomes a new version (versions are never edited)."""
    template = (
        await db.execute(select(DppTemplate).where(DppTemplate.name == spec.name))
    ).scalar_one_or_none()
    if template is None:
        template = DppTemplate(name=spec.name, description=spec.description)
        db.add(template)
        await db.flush()
    template.description = spec.description
    content = (spec.body, spec.variables, spec.dpp_schema)
    published = await published_version(db, template.id) if template.published_version else None
    if published is not None and version_content(published) == content:
        return template  # what it serves already: an export imported again changes nothing
    latest = await latest_version(db, template.id)
    if latest is not None and version_content(latest) == content:
        audit.record(
            db,
            author,
            "publish",
            "template",
            spec.name,
            {"published": template.published_version},
            {"published": latest.version},
        )
        template.published_version = latest.version
        return template
    version = (latest.version + 1) if latest else 1
    db.add(
        DppTemplateVersion(
            template_id=template.id,
            version=version,
            body=spec.body,
            variables=spec.variables,
            dpp_schema=spec.dpp_schema,
            author=author,
        )
    )
    template.published_version = version
    audit.record(db, author, "import", "template", spec.name, None, {"version": version, "published": True})
    return template


async def apply_document(db: AsyncSession, document: FlowsDocument, allowed_hosts: list[str]) -> list[str]:
    """Upsert templates and flows in the caller's transaction; return the flow slugs written."""
    templates: dict[str, int] = {}
    for template_spec in document.dpp_templates:
        template = await save_template(db, template_spec, author=IMPORT_ACTOR)
        templates[template.name] = template.id
    for spec in document.flows:
        check_upstream_hosts(spec, allowed_hosts)
        template_id = None
        if spec.dpp_template is not None:
            template_id = templates.get(spec.dpp_template)
            if template_id is None:
                found = await db.execute(select(DppTemplate.id).where(DppTemplate.name == spec.dpp_template))
                template_id = found.scalar_one_or_none()
            if template_id is None:
                raise FlowImportError(f"flow {spec.slug!r}: unknown dpp_template {spec.dpp_template!r}")
        values = spec.model_dump(exclude={"dpp_template"}, mode="json")
        values["dpp_template_id"] = template_id
        flow = (await db.execute(select(Flow).where(Flow.slug == spec.slug))).scalar_one_or_none()
        if flow is None:
            db.add(Flow(**values))
            audit.record(db, IMPORT_ACTOR, "import", "flow", spec.slug, None, values)
        else:
            before = {key: getattr(flow, key) for key in values}
            for key, value in values.items():
                setattr(flow, key, value)
            if before != values:  # an import that changes nothing records nothing
                audit.record(db, IMPORT_ACTOR, "import", "flow", spec.slug, before, values)
    await db.flush()
    return [spec.slug for spec in document.flows]


def flow_to_spec(flow: Flow) -> FlowSpec:
    return FlowSpec(
        slug=flow.slug,
        display_name=flow.display_name,
        client_id=flow.client_id,
        flow_id=flow.flow_id,
        sdk_mode=flow.sdk_mode,
        upstream=flow.upstream,
        custom_endpoints=flow.custom_endpoints,
        sdk_version=flow.sdk_version,
        genui_enabled=flow.genui_enabled,
        spoken_commands=[SpokenCommand(**c) for c in flow.spoken_commands],
        turn_override=TurnOverride(**flow.turn_override) if flow.turn_override else None,
        page_context=PageContext(**flow.page_context) if flow.page_context else None,
        sdk_options=stored_options(flow.sdk_options),
        allowed_origins=flow.allowed_origins,
        genui_origins=flow.genui_origins,
        dpp_template=flow.dpp_template.name if flow.dpp_template else None,
        enabled=flow.enabled,
        retention_days=flow.retention_days,
        max_duration_seconds=flow.max_duration_seconds,
        idle_cut_seconds=flow.idle_cut_seconds,
        max_concurrent=flow.max_concurrent,
        minutes_per_day=flow.minutes_per_day,
    )


async def import_document(db: Database, document: FlowsDocument, allowed_hosts: list[str]) -> list[str]:
    """Upsert the document's templates and flows in one transaction (all or nothing); the slugs written."""
    async with db.transaction() as session:
        return await apply_document(session, document, allowed_hosts)


async def list_flows(db: Database) -> list[Flow]:
    async with db.reading() as session:
        return list((await session.execute(select(Flow).order_by(Flow.slug))).scalars())


async def export_document(db: Database, slugs: list[str] | None = None) -> FlowsDocument:
    """The flows named (all when none) and the published version of each template they use."""
    async with db.reading() as session:
        query = select(Flow).options(selectinload(Flow.dpp_template)).order_by(Flow.slug)
        if slugs:
            query = query.where(Flow.slug.in_(slugs))
        flows = list((await session.execute(query)).scalars())
        specs = [flow_to_spec(flow) for flow in flows]
        templates = []
        used = {flow.dpp_template.id: flow.dpp_template for flow in flows if flow.dpp_template}
        for template in used.values():
            latest = await published_version(session, template.id)
            if latest is not None:
                templates.append(
                    TemplateSpec(
                        name=template.name,
                        description=template.description,
                        body=latest.body,
                        variables=latest.variables or [],
                        dpp_schema=latest.dpp_schema,
                    )
                )
    return FlowsDocument(dpp_templates=templates, flows=specs)


def demo_document() -> FlowsDocument:
    """The two flows `serve --demo` seeds, both backed by the local simulator."""
    body = {
        "user": {"first_name": "{{ visitor.first_name | default('') }}"},
        "page": {"title": "{{ flow.display_name }}", "url": "{{ flow.url }}"},
        "questions": [
            "What would you like an avatar on your website to do?",
            "Which of our features should I show you first?",
        ],
    }
    simulator_turn = TurnOverride(urls=["stun:127.0.0.1:3478"], iceTransportPolicy="all")
    welcome = TemplateSpec(
        name="demo-welcome", description="Greets the visitor, asks two questions", body=body
    )
    socket_flow = FlowSpec(
        slug="demo",
        display_name="Demo avatar (Socket SDK)",
        client_id="demo-client",
        flow_id="demo-flow",
        sdk_mode="socket",
        upstream="simulator",
        turn_override=simulator_turn,
        dpp_template=welcome.name,
    )
    iframe_flow = FlowSpec(
        slug="demo-iframe",
        display_name="Demo avatar (Iframe SDK)",
        client_id="demo-client",
        flow_id="demo-flow-iframe",
        sdk_mode="iframe",
        upstream="simulator",
        dpp_template=welcome.name,
    )
    return FlowsDocument(dpp_templates=[welcome], flows=[socket_flow, iframe_flow])


# Console edits: one flow at a time, each change audited in its own transaction.


@dataclass(frozen=True)
class FlowSummary:
    slug: str
    display_name: str
    enabled: bool
    sdk_mode: str
    upstream: str
    conversations_today: int


@dataclass(frozen=True)
class FlowLosses:
    """What deleting a flow deletes with it."""

    conversations: int
    transcript_lines: int


async def flow_summaries(db: Database, since: datetime) -> list[FlowSummary]:
    """Every flow with its conversations started since `since` (preview conversations left out)."""
    counts = (
        select(Conversation.flow_id, func.count().label("n"))
        .where(Conversation.created_at >= since, Conversation.preview.is_(False))
        .group_by(Conversation.flow_id)
        .subquery()
    )
    query = (
        select(Flow, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.flow_id == Flow.id)
        .order_by(Flow.slug)
    )
    async with db.reading() as session:
        rows = (await session.execute(query)).all()
    return [
        FlowSummary(flow.slug, flow.display_name, flow.enabled, flow.sdk_mode, flow.upstream, int(count))
        for flow, count in rows
    ]


async def _flow(session: AsyncSession, slug: str) -> Flow:
    flow = await session.scalar(
        select(Flow).options(selectinload(Flow.dpp_template)).where(Flow.slug == slug)
    )
    if flow is None:
        raise NotFound("unknown_flow", f"There is no flow {slug!r}.")
    return flow


async def flow_spec(db: Database, slug: str) -> FlowSpec:
    """One flow as its import document states it (secrets included: callers must not show them)."""
    async with db.reading() as session:
        return flow_to_spec(await _flow(session, slug))


async def template_names(db: Database) -> list[str]:
    async with db.reading() as session:
        return list((await session.execute(select(DppTemplate.name).order_by(DppTemplate.name))).scalars())


async def _flow_values(session: AsyncSession, spec: FlowSpec, allowed_hosts: list[str]) -> dict[str, Any]:
    """The columns of a flow for `spec`, after the checks `flows import` makes too."""
    try:
        check_upstream_hosts(spec, allowed_hosts)
    except FlowImportError as exc:
        raise InvalidField("custom_endpoints", "upstream_host_refused", str(exc)) from None
    template_id = None
    if spec.dpp_template is not None:
        named = select(DppTemplate.id).where(DppTemplate.name == spec.dpp_template)
        template_id = await session.scalar(named)
        if template_id is None:
            raise InvalidField(
                "dpp_template", "unknown_template", f"There is no DPP template {spec.dpp_template!r}."
            )
    values = spec.model_dump(exclude={"dpp_template"}, mode="json")
    values["dpp_template_id"] = template_id
    return values


async def _slug_free(session: AsyncSession, slug: str) -> None:
    if await session.scalar(select(Flow.id).where(Flow.slug == slug)) is not None:
        raise InvalidField("slug", "slug_taken", f"A flow with the address {slug!r} exists already.")


def _audited(spec: FlowSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")  # audit.record masks the ids and TURN credentials


async def create_flow(db: Database, spec: FlowSpec, actor: str, allowed_hosts: list[str]) -> None:
    async with db.transaction() as session:
        await _slug_free(session, spec.slug)
        session.add(Flow(**await _flow_values(session, spec, allowed_hosts)))
        audit.record(session, actor, "create", "flow", spec.slug, None, _audited(spec))


async def update_flow(db: Database, slug: str, spec: FlowSpec, actor: str, allowed_hosts: list[str]) -> None:
    """Replace flow `slug` with `spec` (which may rename it)."""
    async with db.transaction() as session:
        flow = await _flow(session, slug)
        before = flow_to_spec(flow)
        if before == spec:
            return  # saved as it was: nothing changes, nothing to record
        if spec.slug != slug:
            await _slug_free(session, spec.slug)
        for key, value in (await _flow_values(session, spec, allowed_hosts)).items():
            setattr(flow, key, value)
        audit.record(session, actor, "update", "flow", spec.slug, _audited(before), _audited(spec))


async def set_flow_enabled(db: Database, slug: str, enabled: bool, actor: str) -> None:
    async with db.transaction() as session:
        flow = await _flow(session, slug)
        if flow.enabled == enabled:
            return  # nothing changes, nothing to record (a form posted twice)
        flow.enabled = enabled
        action = "enable" if enabled else "disable"
        audit.record(session, actor, action, "flow", slug, {"enabled": not enabled}, {"enabled": enabled})


async def flow_losses(db: Database, slug: str) -> FlowLosses:
    async with db.reading() as session:
        flow = await _flow(session, slug)
        conversations = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.flow_id == flow.id)
        )
        lines = await session.scalar(
            select(func.count())
            .select_from(TranscriptEntry)
            .join(Conversation, Conversation.id == TranscriptEntry.conversation_id)
            .where(Conversation.flow_id == flow.id)
        )
    return FlowLosses(int(conversations or 0), int(lines or 0))


async def delete_flow(db: Database, slug: str, actor: str) -> None:
    """Delete the flow; its conversations and their transcripts go with it (foreign keys cascade)."""
    async with db.transaction() as session:
        flow = await _flow(session, slug)
        before = _audited(flow_to_spec(flow))
        await session.execute(delete(Flow).where(Flow.id == flow.id))
        audit.record(session, actor, "delete", "flow", slug, before, None)
