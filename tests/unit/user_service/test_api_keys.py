"""API key shape, hashing and the log masker's view of it."""

from __future__ import annotations

import re

from services.user_service.domain import api_keys
from shared.logs import mask


def test_issued_key_has_the_documented_shape_and_only_a_hash_is_kept() -> None:
    issued = api_keys.issue()
    assert re.fullmatch(r"key_[0-9A-HJKMNP-TV-Z]{26}", issued.key_id)
    ulid = issued.key_id.removeprefix("key_")
    assert re.fullmatch(rf"tk_{ulid}_[A-Za-z0-9_-]{{43}}", issued.api_key)
    secret = issued.api_key.split("_", 2)[2]
    assert secret not in issued.secret_hash
    assert issued.secret_hash == api_keys.hash_secret(secret)
    assert len(issued.secret_hash) == 64


def test_a_presented_key_verifies_against_its_hash_only() -> None:
    issued, other = api_keys.issue(), api_keys.issue()
    presented = api_keys.parse(issued.api_key)
    assert presented is not None
    assert presented.key_id == issued.key_id
    assert api_keys.verify(presented, issued.secret_hash)
    assert not api_keys.verify(presented, other.secret_hash)


def test_malformed_keys_do_not_parse() -> None:
    issued = api_keys.issue()
    for bad in [
        "",
        "tk_",
        issued.api_key[:-1],
        issued.api_key + "A",
        issued.api_key + "\n",
        "xx" + issued.api_key[2:],
        issued.api_key.replace("tk_", "tk-", 1),
        "admin-token",
    ]:
        assert api_keys.parse(bad) is None, bad


def test_keys_are_unique_and_masked_in_logs() -> None:
    keys = {api_keys.issue().api_key for _ in range(100)}
    assert len(keys) == 100
    key = next(iter(keys))
    assert key.split("_", 2)[2] not in mask(f"client sent {key}")
    assert api_keys.parse(key).id_prefix == ("key_" + key.split("_")[1])[:14]
