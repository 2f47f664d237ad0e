"""mask_url: passwords never reach logs, reprs or error messages."""

from __future__ import annotations

import pytest

from taskroll.store.urls import mask_url


def test_mask_url_hides_passwords() -> None:
    assert mask_url("postgresql://alice:s3cret@db:5432/x?sslmode=disable") == \
        "postgresql://alice:***@db:5432/x?sslmode=disable"
    assert mask_url("postgresql://alice@db/x") == "postgresql://alice@db/x"
    assert mask_url("host=db password=s3cret user=a") == "host=db password=*** user=a"
    assert "s3cret" not in mask_url("mongodb://u:s3cret@h1:1,h2:2/?replicaSet=r")
    assert mask_url("mongodb://u:s3cret@h1:1,h2:2/?replicaSet=r") == \
        "mongodb://u:***@h1:1,h2:2/?replicaSet=r"
    assert mask_url("postgresql://db/x?user=a&password=s3cret") == \
        "postgresql://db/x?user=a&password=***"



@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
    ("mongodb://host/?authSource=admin&password=x", "mongodb://host/?authSource=admin&password=***"),
    ("https://host/?token=abc&x=1", "https://host/?token=***&x=1"),
    ("s3://bucket/?api_key=K&secret=S", "s3://bucket/?api_key=***&secret=***"),
    ("host=h password=zz user=u", "host=h password=*** user=u"),
    ("sqlite:///tasks.db", "sqlite:///tasks.db"),
])
def test_secret_options_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
