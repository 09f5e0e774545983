"""On/off settings from the environment."""

from __future__ import annotations

import pytest

from sysdesign.platform.envflag import env_flag
from sysdesign.platform.errors import ConfigurationError


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        (None, True, True),
        (None, False, False),
        ("  ", False, False),
        ("1", False, True),
        ("TRUE", False, True),
        (" yes ", False, True),
        ("on", False, True),
        ("0", True, False),
        ("False", True, False),
        ("no", True, False),
        ("off", True, False),
    ],
)
def test_flags(raw: str | None, default: bool, expected: bool) -> None:
    environ = {} if raw is None else {"X_FLAG": raw}
    assert env_flag(environ, "X_FLAG", default) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "tru"])
def test_anything_else_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="X_FLAG must be true or false"):
        env_flag({"X_FLAG": raw}, "X_FLAG", True)
