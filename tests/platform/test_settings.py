from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from sysdesign.settings import EMBEDDED_DEFAULTS, Settings


def test_every_backend_defaults_to_its_embedded_engine_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    data = str(tmp_path.resolve())
    for field, template in EMBEDDED_DEFAULTS.items():
        assert getattr(settings, field) == template.format(data=data)
    assert settings.database_url == f"sqlite+aiosqlite:///{data}/app.db"
    assert settings.uses_embedded_database and settings.should_auto_migrate


def test_environment_overrides_with_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSDESIGN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SYSDESIGN_CACHE_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SYSDESIGN_WORKER_ID", "12")
    settings = Settings()
    assert settings.cache_url == "redis://127.0.0.1:6379/0"
    assert settings.worker_id == 12
    assert settings.data_dir == tmp_path


def test_comma_separated_database_url_is_a_list_of_shards(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql+asyncpg://h/a, postgresql+asyncpg://h/b",
    )
    assert settings.database_urls == ["postgresql+asyncpg://h/a", "postgresql+asyncpg://h/b"]
    assert not settings.uses_embedded_database
    assert not settings.should_auto_migrate


@pytest.mark.parametrize(
    ("field", "value"),
    [("worker_id", 1024), ("worker_id", -1), ("port", 70000), ("log_format", "xml")],
)
def test_invalid_values_are_refused_naming_the_field(
    tmp_path: Path, field: str, value: object
) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(data_dir=tmp_path, **{field: value})
    assert field in str(info.value)


def test_jwt_secret_is_generated_once_private_and_kept(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).signing_secret()
    path = tmp_path / "jwt-secret"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 48
    assert Settings(data_dir=tmp_path).signing_secret() == first
    assert Settings(data_dir=tmp_path / "other").signing_secret() != first


def test_configured_jwt_secret_wins(tmp_path: Path) -> None:
    secret = "x" * 40
    assert Settings(data_dir=tmp_path, jwt_secret=secret).signing_secret() == secret
    assert not (tmp_path / "jwt-secret").exists()
    with pytest.raises(ValidationError, match="jwt_secret"):
        Settings(data_dir=tmp_path, jwt_secret="short")


def test_a_truncated_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    from sysdesign.platform.errors import ConfigurationError

    (tmp_path / "jwt-secret").write_text("")
    with pytest.raises(ConfigurationError, match="delete it"):
        Settings(data_dir=tmp_path).signing_secret()


def test_concurrent_first_runs_agree_on_one_secret(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: Settings(data_dir=tmp_path).signing_secret(), range(16)))
    assert len(secrets) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["jwt-secret"]  # no temporary left over
