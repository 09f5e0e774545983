"""``FencedResource``: the protected side of a fenced lock.

A lease can lapse while its holder is paused (a long GC, a swapped-out VM, a
stalled network) and another client can take the lock meanwhile; no lock
service can stop the paused holder from writing when it wakes. The resource
can: it remembers the highest fencing token it has accepted and refuses a
write that carries a lower one. Tokens grow with every grant of a name, so
the newer holder's writes always win and the stale one's are refused.

This class fences a value in this process; ``FencedFile`` fences a file that
several processes write. A database row is fenced the same way with a
``fence`` column and ``UPDATE ... SET value = :v, fence = :token WHERE id =
:id AND fence <= :token`` (one row updated, or zero: refused).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from sysdesign.blocks.lock.base import LockError

T = TypeVar("T")


class StaleToken(LockError):
    """A write carried a fencing token lower than one the resource has accepted."""

    def __init__(self, token: int, highest: int) -> None:
        super().__init__(f"fencing token {token} is stale: {highest} was already accepted")
        self.token = token
        self.highest = highest


class FencedResource(Generic[T]):
    """A value that only the newest lock holder may change. Writes with the
    same token as the highest accepted are allowed (one holder writing
    several times); lower ones raise ``StaleToken`` and change nothing."""

    def __init__(self, value: T) -> None:
        self.value = value
        self.highest_token = 0
        self.refused = 0

    def write(self, token: int, update: Callable[[T], T]) -> T:
        """Apply ``update`` to the value if ``token`` is not stale; the new value."""
        if token < self.highest_token:
            self.refused += 1
            raise StaleToken(token, self.highest_token)
        self.highest_token = token
        self.value = update(self.value)
        return self.value


class FencedFile:
    """A JSON document in a file, written by several processes, fenced by token.

    Each write takes an exclusive ``flock`` on the file, reads the document
    and its highest token, refuses a stale token, and replaces the file
    atomically (write beside it, fsync, rename), all under the flock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> tuple[object, int]:
        """The document and the highest token accepted so far (``None``, 0 when new)."""
        try:
            stored = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None, 0
        return stored["value"], int(stored["token"])

    def write(self, token: int, update: Callable[[object], object]) -> object:
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            value, highest = self.read()
            if token < highest:
                raise StaleToken(token, highest)
            value = update(value)
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "w") as out:
                json.dump({"value": value, "token": token}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            return value
