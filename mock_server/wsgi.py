"""WSGI entry point for other servers, e.g. ``gunicorn -w 4 mock_server.wsgi:app``.

Configured by ``SC_MOCK_*`` environment variables (see ``mock_server.config``).
Worker processes share jobs through the storage root, so set ``SC_MOCK_ROOT``:
without it each worker would get its own temporary root.
"""

from __future__ import annotations

import atexit

from mock_server.app import create_app
from mock_server.config import config_from_env

app = create_app(config_from_env())
atexit.register(app.close)
