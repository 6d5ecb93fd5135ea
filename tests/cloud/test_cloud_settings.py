"""`CloudSettings`: environment parsing, URL normalisation, key handling."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloud.auth import Authenticator, Principal
from cloud.db import create_db_engine
from cloud.settings import DEFAULT_DATABASE_URL, CloudSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (
        "DATABASE_URL",
        "EDGEBUF_DATABASE_URL",
        "EDGEBUF_API_KEYS",
        "EDGEBUF_DEVICE_KEYS",
        "EDGEBUF_MAX_BATCH_RECORDS",
        "EDGEBUF_MIGRATE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    settings = CloudSettings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.max_batch_records == 5000
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.api_keys == [] and settings.device_keys == {}
    assert settings.migrate is True


def test_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db/x")
    monkeypatch.setenv("EDGEBUF_API_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("EDGEBUF_DEVICE_KEYS", "cam-1:s1, line:2:s2")
    monkeypatch.setenv("EDGEBUF_MAX_BATCH_RECORDS", "100")
    monkeypatch.setenv("EDGEBUF_MIGRATE", "false")
    settings = CloudSettings()
    assert settings.database_url == "postgresql+psycopg://u@db/x"
    assert settings.api_keys == ["k1", "k2"]
    assert settings.device_keys == {"cam-1": "s1", "line:2": "s2"}
    assert settings.max_batch_records == 100
    assert settings.migrate is False


def test_keyword_arguments_win_over_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///env.db")
    assert CloudSettings(database_url="sqlite:///kw.db").database_url == "sqlite:///kw.db"


@pytest.mark.parametrize("pairs", ["no-colon", ":key", "dev:", "a:b,broken"])
def test_bad_device_key_entries_are_refused(pairs):
    with pytest.raises(ValidationError):
        CloudSettings(device_keys=pairs)


def test_keys_are_not_in_repr():
    settings = CloudSettings(api_keys=["topsecret"], device_keys={"cam": "hidden"})
    assert "topsecret" not in repr(settings) and "hidden" not in repr(settings)


def test_authenticator_maps_tokens_to_principals():
    auth = Authenticator(CloudSettings(api_keys="admin", device_keys="cam-1:c1"))
    assert auth.principal_for("admin") == Principal(None)
    assert auth.principal_for("c1") == Principal("cam-1")
    assert auth.principal_for("c1x") is None
    assert auth.principal_for("") is None
    assert not Authenticator(CloudSettings()).enabled


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "mysql://x/y", "postgresql+psycopg2://u@h/d"]
)
def test_unsupported_databases_are_refused(url):
    with pytest.raises(ValueError):
        create_db_engine(CloudSettings(database_url=url))


def test_sqlite_parent_directory_is_created(tmp_path):
    target = tmp_path / "deep" / "er" / "cloud.db"
    engine = create_db_engine(CloudSettings(database_url=f"sqlite:///{target}"))
    engine.dispose()
    assert target.parent.is_dir()
