"""A werkzeug mock of the SiliconCompiler remote job server.

``MockServer`` runs it in a thread for tests and the conformance suite;
``mock_server.app.create_app`` gives the bare WSGI application; ``sc-mock-server``
serves it from the command line.
"""

from __future__ import annotations

from mock_server.config import MockConfig
from mock_server.server import MockServer

__all__ = ["MockConfig", "MockServer"]
