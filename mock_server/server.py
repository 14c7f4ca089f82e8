"""Run the mock server in a background thread: the suite's embedded default.

``MockServer`` binds werkzeug's threaded server to loopback (port 0 picks a free
port), serves until ``stop()``, and exposes the base URL clients should use.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server

from mock_server.app import MockApp
from mock_server.app import create_app
from mock_server.config import MockConfig
from mock_server.harness import Harness
from mock_server.middleware import ControlledApp
from mock_server.tls import CERTIFICATE_NAME
from mock_server.tls import self_signed_context

logger = logging.getLogger(__name__)


class MockServer:
    """A mock server in a thread; use as a context manager or start()/stop().

    Accepts a ``MockConfig``, keyword arguments named like its fields, or both
    (keywords override the config).
    """

    def __init__(self, config: MockConfig | None = None, **settings: Any) -> None:
        config = config or MockConfig()
        self.config = replace(config, **settings) if settings else config
        self._app: MockApp | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._harness: Harness | None = None
        self.certificate: Path | None = None

    @property
    def app(self) -> MockApp:
        if self._app is None:
            raise RuntimeError("the mock server is not running")
        return self._app

    @property
    def harness(self) -> Harness:
        """The client-developer controls: faults, journal, job scripts, accounts."""
        if self._harness is None:
            raise RuntimeError("the mock server is not running")
        return self._harness

    @property
    def root(self) -> Path:
        """The storage root (a temporary folder unless one was configured)."""
        return self.app.root

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the mock server is not running")
        return self._server.server_port

    @property
    def url(self) -> str:
        """The base URL, always ending with ``/``."""
        scheme = "https" if self.config.tls else "http"
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}/"

    def start(self) -> MockServer:
        if self._server is not None:
            raise RuntimeError("the mock server is already running")

        app = create_app(self.config)
        try:
            harness = Harness(app)
            ssl_context = None
            if self.config.tls:
                self.certificate = app.root / CERTIFICATE_NAME
                ssl_context = self_signed_context(self.config.host, self.certificate)
            server = make_server(
                self.config.host,
                self.config.port,
                ControlledApp(app, harness),
                threaded=True,
                ssl_context=ssl_context,
            )
        except BaseException:
            app.close()
            raise

        self._app = app
        self._harness = harness
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="sc-mock-server",
            daemon=True,
        )
        self._thread.start()
        logger.info("mock server listening on %s (root %s)", self.url, app.root)
        return self

    def stop(self) -> None:
        """Stop serving, stop the runner between nodes, release the storage root."""
        if self._server is None:
            return
        url = self.url
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self.app.close()
        self._server = None
        self._thread = None
        logger.info("mock server on %s stopped", url)

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
