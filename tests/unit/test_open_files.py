"""`serve` raises its open-file limit at start: each relayed session holds two sockets."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

PROBE = """
import json, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from server.open_files import raise_open_files_limit
capacity = raise_open_files_limit()
print(json.dumps([capacity, *resource.getrlimit(resource.RLIMIT_NOFILE)]))
"""


def test_the_soft_limit_is_raised_to_the_hard_one_and_the_capacity_follows() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here ({hard}) leaves nothing to raise")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    capacity, soft, after_hard = json.loads(out.stdout)
    assert after_hard == hard
    assert soft > 256 and soft == (hard if hard != resource.RLIM_INFINITY else soft)
    assert capacity == (soft - 200) // 2
