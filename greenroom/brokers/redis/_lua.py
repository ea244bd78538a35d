"""The Lua scripts of the Redis broker, read from the package once and named by their SHA1."""

from __future__ import annotations

import hashlib
import importlib.resources
import threading

__all__ = ["LuaScripts"]


class LuaScripts:
    """The packaged scripts (``_scripts/<name>.lua``), loaded on first use and kept.

    One instance is shared by the processes a broker forks into: a script's source and SHA1 do
    not change, and a lost race only reads a file twice.
    """

    def __init__(self) -> None:
        self._scripts: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()

    def sha(self, name: str) -> str:
        """The SHA1 that ``EVALSHA`` names the script by."""
        return self._get(name)[0]

    def source(self, name: str) -> bytes:
        """The script's source, for ``SCRIPT LOAD`` after Redis replied ``NOSCRIPT``."""
        return self._get(name)[1]

    def _get(self, name: str) -> tuple[str, bytes]:
        script = self._scripts.get(name)
        if script is None:
            resource = importlib.resources.files(__package__).joinpath(f"_scripts/{name}.lua")
            source = resource.read_bytes()
            script = (hashlib.sha1(source).hexdigest(), source)
            with self._lock:
                self._scripts[name] = script
        return script
