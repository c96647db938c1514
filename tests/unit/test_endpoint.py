"""The pool management endpoint: checked, normalized, and read for the pool's name."""

from __future__ import annotations

import pytest

from azure_sessions.endpoint import PoolEndpoint, pool_name_from_endpoint

AZURE = "https://eastus.dynamicsessions.io/subscriptions/s/resourceGroups/g/sessionPools/My-Pool"


@pytest.mark.parametrize(
    ("endpoint", "name"),
    [
        (AZURE, "My-Pool"),
        (AZURE + "/", "My-Pool"),
        (AZURE.replace("sessionPools", "SESSIONPOOLS"), "My-Pool"),
        (AZURE.replace("sessionPools", "sessionpools") + "/extra", "My-Pool"),
        ("http://127.0.0.1:1/a/b", "b"),
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("", ""),
    ],
)
def test_the_pool_name_follows_sessionpools_in_any_case_and_keeps_its_own(endpoint, name):
    assert pool_name_from_endpoint(endpoint) == name


def test_an_endpoint_is_normalized_once_and_knows_whether_it_is_azure():
    pool = PoolEndpoint.parse(AZURE + "/?tenant=x")
    assert (pool.url, pool.query, pool.host) == (AZURE, "tenant=x", "eastus.dynamicsessions.io")
    assert pool.is_azure and pool.pool_name == "My-Pool"
    assert not PoolEndpoint.parse("http://127.0.0.1:1/p").is_azure
    for bad in ("not a url", "ftp://host/p", "https://", ""):
        with pytest.raises(ValueError, match="endpoint must be an http"):
            PoolEndpoint.parse(bad)
