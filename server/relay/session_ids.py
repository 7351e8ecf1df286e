"""Engine.IO session ids that name their instance, so a balancer can keep a long-polling session sticky.

nginx (without the commercial sticky cookie) cannot tell which instance holds a session, and `ip_hash` puts
every client behind one address on one instance. Each instance instead starts its session ids with its own
id and a dot (base64url never contains a dot), and the balancer picks the instance from the `sid` query
parameter (deploy/nginx/avatar-bff.conf.template). A request without one (a new session) goes anywhere.
"""

from __future__ import annotations

from typing import Any

SEPARATOR = "."


def prefix_session_ids(sio: Any, instance_id: str) -> None:
    """Make the Socket.IO server's Engine.IO layer start every new session id with `instance_id` + '.'."""
    if not instance_id:
        return
    engine = sio.eio
    generate = engine.generate_id

    def generate_id() -> str:
        return f"{instance_id}{SEPARATOR}{generate()}"

    engine.generate_id = generate_id


def instance_of(session_id: str) -> str:
    """The instance id a session id starts with ('' for an id without one)."""
    head, dot, _ = session_id.partition(SEPARATOR)
    return head if dot else ""
