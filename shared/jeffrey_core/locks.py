"""A Redis lock owned by a token (a run id): acquired again by the same owner after a crash, extended
while work goes on, released only by its owner. Every step is one atomic Lua script."""

from __future__ import annotations

from typing import Any

import redis

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class OwnedLock:
    def __init__(self, client: redis.Redis, key: str, owner: str, ttl_seconds: float) -> None:
        self.client = client
        self.key = key
        self.owner = owner
        self.ttl_ms = int(ttl_seconds * 1000)

    def _run(self, script: str) -> Any:
        return self.client.eval(script, 1, self.key, self.owner, self.ttl_ms)

    def acquire(self) -> bool:
        """Take the lock, or renew it when this owner already holds it; False when someone else does."""
        return bool(self._run(_ACQUIRE))

    def extend(self) -> bool:
        return bool(self._run(_EXTEND))

    def release(self) -> bool:
        return bool(self._run(_RELEASE))
