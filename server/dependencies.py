"""What routers receive: the app's shared services and a database session per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.security.signing import Signer
from server.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    signer: Signer
    templates: Jinja2Templates
    http: (
        httpx.AsyncClient
    )  # outbound calls to the upstream (WHEP, Iframe SDK assets); never follows redirects


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    async with get_services(request).sessions() as session:
        yield session


def csp_nonce(request: Request) -> str:
    nonce: str = request.scope["state"]["csp_nonce"]
    return nonce
