"""Kaltura's published DPP examples (schemas and sample DPPs from the SDK repository at the pinned tag) as
test data that is never committed: from a checkout named by AVATAR_BFF_SDK_CHECKOUT, else from the user cache,
else downloaded once into that cache. Without any of them, the tests that need them skip with the reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from server.sdk import cache_dir

TAG = "v2.7.4"
RAW = f"https://raw.githubusercontent.com/kaltura/conversational-avatar-embed-sdk/{TAG}/sdk-iframe/examples"
SCHEMA = "dynamic_page_prompt.schema.json"
SAMPLES = "dynamic_page_prompt_samples"
# What each example publishes beside its schema (code_interview's samples are the schema's own `examples`).
FILES = {
    "hr_avatar": [
        "interview_acme_logistics-dispenser.json",
        "interview_amazon_ads_engineering-ai-data-analyst.json",
        "interview_amazon_experienced-delivery-driver.json",
        "interview_aws_engineering-software-developer.json",
        "interview_mcdonalds_crew-worker-entry-level.json",
        "post-interview_mcdonalds_candidate_not_selected.json",
        "post-interview_mcdonalds_offer-call.json",
    ],
    "code_interview": [],
    "att_lily": [
        "cc_ccaas-overview.json",
        "cc_five9-ai.json",
        "cc_solution-mapping.json",
        "fiber_bundle-offers.json",
        "fiber_internet-plans.json",
        "fiber_vs-cable.json",
        "wireless_5g-network.json",
        "wireless_device-tradein.json",
        "wireless_unlimited-plans.json",
    ],
}


def _relative_paths() -> list[str]:
    return [f"{name}/{SCHEMA}" for name in FILES] + [
        f"{name}/{SAMPLES}/{file}" for name, files in FILES.items() for file in files
    ]


def _complete(base: Path) -> bool:
    return all((base / path).is_file() for path in _relative_paths())


def examples_dir() -> Path:
    """A directory of <example>/dynamic_page_prompt.schema.json and its samples; skips when there is none."""
    cached = cache_dir().parent / "kaltura-examples" / TAG
    checkout = os.environ.get("AVATAR_BFF_SDK_CHECKOUT")
    if checkout:
        source = Path(checkout) / "sdk-iframe" / "examples"
        if not _complete(source):
            pytest.skip(f"AVATAR_BFF_SDK_CHECKOUT does not hold the examples of {TAG}")
        for path in _relative_paths():  # kept for later runs without the checkout
            (cached / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / path, cached / path)
        return source
    if _complete(cached):
        return cached
    try:
        with httpx.Client(timeout=10) as client:
            for path in _relative_paths():
                answer = client.get(f"{RAW}/{path}")
                answer.raise_for_status()
                (cached / path).parent.mkdir(parents=True, exist_ok=True)
                (cached / path).write_bytes(answer.content)
    except httpx.HTTPError as exc:
        pytest.skip(
            f"Kaltura's examples are not cached and could not be downloaded ({type(exc).__name__}); set"
            " AVATAR_BFF_SDK_CHECKOUT to a checkout of the SDK repository once"
        )
    return cached
