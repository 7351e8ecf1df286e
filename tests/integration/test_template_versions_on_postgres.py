"""Template versions on PostgreSQL: saves add versions, publish and roll back move the pointer flows serve,
a delete takes the versions with it and leaves conversations their rendered DPP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server import audit, dpp_templates
from server.audit import AuditFilter
from server.conversations import listing
from server.db import Database
from server.dpp.checks import check_template
from server.errors import Conflict
from server.flows import page_flow
from server.security.signing import Signer
from server.settings import Settings
from tests import factories
from tests.support import make_settings, migrated_postgres_database

pytestmark = pytest.mark.postgres


def test_versions_and_the_published_pointer_on_postgres(tmp_path: Path) -> None:
    with migrated_postgres_database() as url:
        asyncio.run(scenario(make_settings(tmp_path, database_url=url)))


async def scenario(settings: Settings) -> None:
    db = Database(settings.effective_database_url)
    signer = Signer(settings.secret)
    try:
        one = check_template({"greeting": "Hi {{ visitor.n }}"}, [{"name": "n", "example": "A"}], None)
        two = check_template({"greeting": "Hello {{ visitor.n }}"}, [{"name": "n", "example": "A"}], None)
        await dpp_templates.create_template(db, "a@example.com", "t", "", one)
        with pytest.raises(Conflict):
            await dpp_templates.create_template(db, "a@example.com", "t", "", one)
        assert (await dpp_templates.save_version(db, "a@example.com", "t", "", two)).version == 2
        again = await dpp_templates.save_version(db, "a@example.com", "t", "new words", two)
        assert (again.version, again.described) == (None, True)
        await factories.create_flow(db, "f")
        await factories.change_flow(db, "f", dpp_template="t")
        _, served = await page_flow(db, "f")
        assert served is not None and served.version == 1
        assert await dpp_templates.publish(db, "a@example.com", "t", 2) == "publish"
        _, served = await page_flow(db, "f")
        assert served is not None and served.version == 2
        started = await factories.start_conversation(db, signer, "f", {"n": "Bo"})
        assert (await listing.detail_of(db, started.id)).template == {"name": "t", "version": 2}
        assert await dpp_templates.publish(db, "a@example.com", "t", 1) == "rollback"
        (row,) = [r for r in await dpp_templates.list_templates(db) if r.name == "t"]
        assert (row.published_version, row.newest_version, row.flows) == (1, 2, ["f"])
        with pytest.raises(Conflict):
            await dpp_templates.delete_template(db, "a@example.com", "t")
        await factories.change_flow(db, "f", dpp_template=None)
        await dpp_templates.delete_template(db, "a@example.com", "t")
        conversation = (await listing.detail_of(db, started.id)).conversation
        assert conversation.template_version_id is None
        assert conversation.rendered_dpp == {"greeting": "Hello Bo"}
        actions = [e.action for e in await audit.entries(db, AuditFilter(target="t"))]
        assert actions == ["delete", "rollback", "publish", "save", "save", "create"]
    finally:
        await db.dispose()
