"""DPP templates as the console edits them: immutable versions, a published pointer, history and diffs.

Every save adds a version (never edits one); publishing and rolling back only move the template's
`published_version`, which is what flows serve. Each change writes its audit entry in the same transaction.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server import audit
from server.db import Database
from server.dpp.checks import CheckedTemplate
from server.errors import Conflict, NotFound
from server.flows import latest_version, version_content
from server.models import DppTemplate, DppTemplateVersion, Flow


@dataclass(frozen=True)
class TemplateRow:
    name: str
    description: str
    published_version: int | None
    newest_version: int | None
    flows: list[str]


@dataclass(frozen=True)
class VersionInfo:
    id: int
    version: int
    author: str
    created_at: datetime


@dataclass(frozen=True)
class VersionContent:
    id: int
    version: int
    body: Any
    variables: list[dict[str, Any]]
    schema: dict[str, Any] | None


@dataclass(frozen=True)
class TemplateDetail:
    name: str
    description: str
    published_version: int | None
    versions: list[VersionInfo]  # newest first
    flows: list[str]
    shown: VersionContent | None


async def _flows_by_template(session: AsyncSession) -> dict[int, list[str]]:
    rows = await session.execute(
        select(Flow.dpp_template_id, Flow.slug).where(Flow.dpp_template_id.is_not(None)).order_by(Flow.slug)
    )
    used: dict[int, list[str]] = {}
    for template_id, slug in rows:
        if template_id is not None:
            used.setdefault(template_id, []).append(slug)
    return used


async def list_templates(db: Database) -> list[TemplateRow]:
    async with db.reading() as session:
        newest = (
            select(DppTemplateVersion.template_id, func.max(DppTemplateVersion.version).label("newest"))
            .group_by(DppTemplateVersion.template_id)
            .subquery()
        )
        rows = (
            await session.execute(
                select(DppTemplate, newest.c.newest)
                .outerjoin(newest, newest.c.template_id == DppTemplate.id)
                .order_by(DppTemplate.name)
            )
        ).all()
        used = await _flows_by_template(session)
    return [TemplateRow(t.name, t.description, t.published_version, n, used.get(t.id, [])) for t, n in rows]


async def _template(session: AsyncSession, name: str) -> DppTemplate:
    template = await session.scalar(select(DppTemplate).where(DppTemplate.name == name))
    if template is None:
        raise NotFound("unknown_template", f"There is no DPP template named {name!r}.")
    return template


async def _version(session: AsyncSession, template: DppTemplate, number: int) -> DppTemplateVersion:
    version = await session.scalar(
        select(DppTemplateVersion).where(
            DppTemplateVersion.template_id == template.id, DppTemplateVersion.version == number
        )
    )
    if version is None:
        raise NotFound("unknown_version", f"Template {template.name!r} has no version {number}.")
    return version


def _content(version: DppTemplateVersion) -> VersionContent:
    return VersionContent(
        version.id, version.version, version.body, version.variables or [], version.dpp_schema
    )


async def template_detail(db: Database, name: str, shown: int | None = None) -> TemplateDetail:
    """A template with its history; `shown` picks the version whose content is returned (newest if None)."""
    async with db.reading() as session:
        template = await _template(session, name)
        versions = list(
            (
                await session.execute(
                    select(DppTemplateVersion)
                    .where(DppTemplateVersion.template_id == template.id)
                    .order_by(DppTemplateVersion.version.desc())
                )
            ).scalars()
        )
        if shown is None:
            content = _content(versions[0]) if versions else None
        else:
            content = _content(await _version(session, template, shown))
        used = (await _flows_by_template(session)).get(template.id, [])
    return TemplateDetail(
        template.name,
        template.description,
        template.published_version,
        [VersionInfo(v.id, v.version, v.author, v.created_at) for v in versions],
        used,
        content,
    )


def _new_version(
    template: DppTemplate, number: int, checked: CheckedTemplate, actor: str
) -> DppTemplateVersion:
    return DppTemplateVersion(
        template_id=template.id,
        version=number,
        body=checked.body,
        variables=checked.variables,
        dpp_schema=checked.schema,
        author=actor,
    )


async def create_template(
    db: Database, actor: str, name: str, description: str, checked: CheckedTemplate
) -> None:
    """A new template whose first version is published at once (a template with nothing published does
    nothing)."""
    try:
        async with db.transaction() as session:
            if await session.scalar(select(DppTemplate.id).where(DppTemplate.name == name)) is not None:
                raise Conflict("template_exists", f"A template named {name!r} exists already.")
            template = DppTemplate(name=name, description=description, published_version=1)
            session.add(template)
            await session.flush()
            session.add(_new_version(template, 1, checked, actor))
            audit.record(
                session,
                actor,
                "create",
                "template",
                name,
                after={"description": description, "version": 1, "published_version": 1},
            )
    except IntegrityError:  # created by someone else between the check and the insert
        raise Conflict("template_exists", f"A template named {name!r} exists already.") from None


@dataclass(frozen=True)
class Saved:
    version: int | None  # the new version's number; None when the content did not change
    described: bool  # the description changed


async def save_version(
    db: Database, actor: str, name: str, description: str, checked: CheckedTemplate
) -> Saved:
    """Add a draft version when the content changed (the published one stays) and keep the description."""
    try:
        async with db.transaction() as session:
            template = await _template(session, name)
            latest = await latest_version(session, template.id)
            before = {"description": template.description, "version": latest.version if latest else None}
            changed = latest is None or version_content(latest) != (
                checked.body,
                checked.variables,
                checked.schema,
            )
            number = ((latest.version if latest else 0) + 1) if changed else None
            described = description != template.description
            if number is None and not described:
                return Saved(None, False)
            template.description = description
            if number is not None:
                session.add(_new_version(template, number, checked, actor))
                if template.published_version is None:
                    template.published_version = number
            after = {"description": description, "version": number or before["version"]}
            audit.record(session, actor, "save", "template", name, before=before, after=after)
            return Saved(number, described)
    except IntegrityError:  # a version of the same number saved meanwhile
        raise Conflict(
            "version_conflict", "Someone saved this template at the same moment. Reload it and try again."
        ) from None


async def publish(db: Database, actor: str, name: str, number: int) -> str:
    """Point the template at an existing version; "publish" or, to an older one, "rollback"."""
    async with db.transaction() as session:
        template = await _template(session, name)
        await _version(session, template, number)
        before = template.published_version
        action = "rollback" if before is not None and number < before else "publish"
        if before != number:
            template.published_version = number
            audit.record(
                session,
                actor,
                action,
                "template",
                name,
                before={"published_version": before},
                after={"published_version": number},
            )
    return action


async def delete_template(db: Database, actor: str, name: str) -> None:
    """Delete a template and its versions; refused while a flow uses it."""
    async with db.transaction() as session:
        template = await _template(session, name)
        used = (await _flows_by_template(session)).get(template.id, [])
        if used:
            raise Conflict(
                "template_in_use",
                f"Flows use this template ({', '.join(used)}): give them another template first.",
            )
        count = await session.scalar(
            select(func.count()).where(DppTemplateVersion.template_id == template.id)
        )
        audit.record(
            session,
            actor,
            "delete",
            "template",
            name,
            before={
                "description": template.description,
                "versions": count,
                "published_version": template.published_version,
            },
        )
        await session.delete(template)


async def version_contents(db: Database, name: str, numbers: list[int]) -> list[VersionContent]:
    async with db.reading() as session:
        template = await _template(session, name)
        return [_content(await _version(session, template, n)) for n in numbers]


async def version_id(db: Database, name: str, number: int) -> int:
    async with db.reading() as session:
        return (await _version(session, await _template(session, name), number)).id


async def flow_choices(db: Database) -> list[tuple[str, str]]:
    """Enabled flows (slug, display name): where a draft can be tried."""
    async with db.reading() as session:
        rows = await session.execute(
            select(Flow.slug, Flow.display_name).where(Flow.enabled).order_by(Flow.slug)
        )
        return [(slug, display) for slug, display in rows]


async def flow_display_name(db: Database, slug: str) -> str | None:
    async with db.reading() as session:
        name: str | None = await session.scalar(select(Flow.display_name).where(Flow.slug == slug))
        return name


def pretty(content: VersionContent) -> str:
    """A version as the text a diff compares: body, variables and schema, pretty-printed."""
    document = {"body": content.body, "variables": content.variables, "schema": content.schema}
    return json.dumps(document, indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "del", "same" or "hunk"
    text: str


def diff(old: VersionContent, new: VersionContent) -> list[DiffLine]:
    """A unified diff of two versions' pretty-printed JSON, line by line."""
    lines = difflib.unified_diff(
        pretty(old).splitlines(),
        pretty(new).splitlines(),
        f"version {old.version}",
        f"version {new.version}",
        lineterm="",
    )
    kinds = {"+": "add", "-": "del", "@": "hunk", " ": "same"}
    out = []
    for line in lines:
        if line.startswith(("+++", "---")):
            continue
        out.append(DiffLine(kinds.get(line[:1], "same"), line))
    return out
