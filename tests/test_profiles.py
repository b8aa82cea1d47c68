"""Profiles: each composes to the params it had as a full file, and validates."""

import hashlib
import json

import pytest

from pipeline.config import read_yaml
from pipeline.profiles import PROFILES, available

# sha256 (first 16 hex digits) of each profile's params as parsed data (JSON, keys sorted), taken from the full
# files of commit 63a902e, before the profiles became overlays on default.yaml. A deliberate change to a profile
# changes its digest here, in the same commit.
PINNED = {
    "backbones": "a763bd52e02a83c4",
    "clutter": "cea13d169af76b40",
    "default": "f5cc120816b6d1de",
    "extensions": "5612e8f94a072784",
    "full": "24b3e70fcbdcf57b",
    "paper": "718b64efea83a046",
    "related-addon-aa": "bc9aeb7183c350a6",
    "related-addon-gsa": "8599cc496638a499",
    "related-addon-mhsa": "d286d0dc4a550099",
    "related-addon-nonlocal": "31ca5bb90b7d32e8",
    "related-addon": "73b94a17a0b08354",
    "related-scratch": "7213e672bdb70f09",
    "tiny": "88718999ad691ad9",
}


def digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def composed(name: str) -> dict:
    return read_yaml((PROFILES / f"{name}.yaml").read_text())


def test_every_profile_is_pinned():
    assert sorted(PINNED) == available()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_profile_composes_to_the_params_it_had(name):
    assert digest(composed(name)) == PINNED[name]
