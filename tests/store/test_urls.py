"""mask_url: passwords never reach logs, reprs or error messages."""

from __future__ import annotations

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
