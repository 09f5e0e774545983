"""The shared User Service: registration, login, JWT access and rotating refresh tokens."""

from sysdesign.platform.accounts.security import Principal, current_user, optional_user

__all__ = ["Principal", "current_user", "optional_user"]
