"""A local stand-in for the avatar service (like stripe-mock): the Socket SDK's Socket.IO protocol, WHEP with
real WebRTC media, the Iframe SDK's assets and meeting page, and introspection for tests.

It imports nothing from the rest of `server/` and talks to it only over the wire.
"""

from server.simulator.app import create_app
from server.simulator.config import SimulatorConfig

__all__ = ["SimulatorConfig", "create_app"]
