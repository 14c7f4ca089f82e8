"""WSGI entry point for other servers, e.g. ``gunicorn -w 4 mock_server.wsgi:app``.

Configured by ``SC_MOCK_*`` environment variables (see ``mock_server.config``).
Worker processes share jobs, accounts, faults and the journal through the storage
root, so set ``SC_MOCK_ROOT``: without it each worker would get its own temporary
root. Do not use ``--preload``: each worker runs jobs in its own threads, which a
fork would not carry over.
"""

from __future__ import annotations

import atexit
import os

from mock_server.app import create_app
from mock_server.config import config_from_env
from mock_server.harness import Harness
from mock_server.middleware import ControlledApp

mock_app = create_app(config_from_env())
atexit.register(mock_app.close)

# Workers of one gunicorn master share its process id as their parent's: the first
# worker to start clears the controls a previous run left and applies the scenario.
harness = Harness(mock_app, boot=f"wsgi-parent-{os.getppid()}")
app = ControlledApp(mock_app, harness)
