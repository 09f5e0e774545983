"""On/off settings read from the environment where a system builds its app."""

from __future__ import annotations

from collections.abc import Mapping

from sysdesign.platform.errors import ConfigurationError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def parse_flag(raw: str) -> bool | None:
    """``True`` for 1/true/yes/on, ``False`` for 0/false/no/off (any case,
    surrounding blanks ignored); ``None`` for anything else, for the caller
    to report in its own words."""
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    return None


def env_flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """``environ[name]`` as a boolean; ``default`` when unset or blank.
    ``ConfigurationError`` naming the variable for anything else."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = parse_flag(raw)
    if value is not None:
        return value
    raise ConfigurationError(f"{name} must be true or false (or 1 or 0), got {raw!r}")
