"""Settings: every backend URL with its embedded default, read from ``SYSDESIGN_*``.

Nothing here is read at import time: ``Settings()`` is built by the CLI or by a
test and handed to the platform.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sysdesign.platform.errors import ConfigurationError

# Embedded defaults; ``{data}`` is replaced by the absolute data directory.
EMBEDDED_DEFAULTS: dict[str, str] = {
    "database_url": "sqlite+aiosqlite:///{data}/app.db",
    "cache_url": "memory://",
    "queue_url": "sqlite:///{data}/queue.db",
    "lock_url": "sqlite:///{data}/locks.db",
    "ratelimit_url": "memory://",
    "search_url": "tantivy://{data}/search",
    "storage_url": "file://{data}/blobs",
    "geo_url": "memory://",
    "realtime_url": "memory://",
    "feed_url": "memory://",
}

MAX_WORKER_ID = 1023


class Settings(BaseSettings):
    """Runtime configuration. Every field can be set as ``SYSDESIGN_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="SYSDESIGN_", extra="ignore")

    data_dir: Path = Path("./.sysdesign")
    worker_id: int = Field(default=0, ge=0, le=MAX_WORKER_ID)

    # Backends by URL; ``None`` means the embedded default under ``data_dir``.
    database_url: str | None = None
    cache_url: str | None = None
    queue_url: str | None = None
    lock_url: str | None = None
    ratelimit_url: str | None = None
    search_url: str | None = None
    storage_url: str | None = None
    geo_url: str | None = None
    realtime_url: str | None = None
    feed_url: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None

    max_body_bytes: int = Field(default=1_048_576, ge=1)
    auto_migrate: bool | None = None  # None: only on the embedded SQLite default
    log_level: str = "info"
    log_format: str = "json"  # json | console
    access_log: bool = True

    access_token_ttl_seconds: int = Field(default=900, ge=1)
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, ge=1)
    jwt_secret: str | None = None  # None: generated into the data dir on first run
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    login_failures_per_email: int = Field(default=10, ge=1)
    login_failures_per_ip: int = Field(default=100, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    idempotency_ttl_seconds: int = Field(default=86400, ge=1)
    outbox_relay: bool = True  # publish outbox events to the queue from this process
    ratelimit_enabled: bool = True  # the gateway applies the rate-limit rules to every request
    ratelimit_rules: Path | None = None  # a YAML rules file; None: the built-in defaults
    ratelimit_reload_seconds: float = Field(default=2.0, gt=0)
    # Comma-separated e-mails of the accounts that may act as admins (block links...).
    admin_emails: str = ""

    @property
    def admins(self) -> frozenset[str]:
        return frozenset(e.strip().lower() for e in self.admin_emails.split(",") if e.strip())

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("json", "console"):
            raise ValueError("log_format must be 'json' or 'console'")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError("jwt_secret must be at least 32 characters (HS256 needs 256 bits)")
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        data = str(self.data_dir.expanduser().resolve())
        for field, template in EMBEDDED_DEFAULTS.items():
            if getattr(self, field) in (None, ""):
                object.__setattr__(self, field, template.format(data=data))
        return self

    def url(self, name: str) -> str:
        """The configured URL for backend ``name`` (``database``, ``cache``...)."""
        value: Any = getattr(self, f"{name}_url")
        return str(value)

    @property
    def database_urls(self) -> list[str]:
        """The database shards: a comma-separated ``database_url`` is a list."""
        return [u.strip() for u in self.url("database").split(",") if u.strip()]

    @property
    def uses_embedded_database(self) -> bool:
        return all(u.startswith("sqlite") for u in self.database_urls)

    @property
    def should_auto_migrate(self) -> bool:
        if self.auto_migrate is None:
            return self.uses_embedded_database
        return self.auto_migrate

    def ensure_data_dir(self) -> Path:
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def signing_secret(self) -> str:
        """The JWT signing secret: from settings, else the data dir's, made on first use."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.ensure_data_dir() / "jwt-secret"
        if not path.exists():
            # Written whole to a private temporary file, then linked into place: a reader
            # never sees a half-written secret, and of two processes starting at once,
            # one link wins and both use its secret.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jwt-secret-")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
                    handle.flush()
                    os.fsync(handle.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise ConfigurationError(
                f"{path} holds a secret shorter than 32 characters: delete it to make a new one"
            )
        return secret
