"""The admin API: the client-developer controls over HTTP, for any language.

Served under ``/_admin/`` only when the server runs with ``--admin`` (``admin=True``,
``SC_MOCK_ADMIN=1``): it can rewrite the server's behaviour and read what clients
sent, so it is never on by default. Bodies and answers are JSON; errors are
``{"message": ...}`` like the job API's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map
from werkzeug.routing import Rule
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from mock_server.control import JobScript
from mock_server.control import ScriptError
from mock_server.control import UnknownJob
from mock_server.faults import Fault
from mock_server.faults import FaultError
from mock_server.scenario import AccountSpec
from mock_server.scenario import Scenario
from mock_server.scenario import ScenarioError

if TYPE_CHECKING:
    from mock_server.harness import Harness

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_admin/"
MAX_ADMIN_BODY_BYTES = 1024 * 1024


class AdminError(Exception):
    """A refused admin request, with its status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _rule(path: str, endpoint: str, *methods: str) -> Rule:
    return Rule(ADMIN_PREFIX + path, endpoint=endpoint, methods=list(methods))


class AdminApi:
    """WSGI application of the admin API over one ``Harness``."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.url_map = Map(
            [
                _rule("journal", "journal", "GET"),
                _rule("journal", "clear_journal", "DELETE"),
                _rule("faults", "faults", "GET"),
                _rule("faults", "add_faults", "POST"),
                _rule("faults", "clear_faults", "DELETE"),
                _rule("faults/<int:fault_id>", "remove_fault", "DELETE"),
                _rule("jobs", "jobs", "GET"),
                _rule("jobs/script", "script", "GET"),
                _rule("jobs/script", "set_script", "PUT"),
                _rule("jobs/script", "clear_script", "DELETE"),
                _rule("jobs/advance", "advance_all", "POST"),
                _rule("jobs/<job_hash>/advance", "advance", "POST"),
                _rule("accounts", "accounts", "GET"),
                _rule("accounts/<username>", "put_account", "PUT"),
                _rule("accounts/<username>", "remove_account", "DELETE"),
                _rule("settings", "settings", "GET"),
                _rule("settings", "put_settings", "PUT"),
                _rule("scenario", "scenario", "POST"),
                _rule("reset", "reset", "POST"),
            ],
            strict_slashes=False,
        )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
            answer = getattr(self, f"on_{endpoint}")(request, **values)
            return _json(answer)
        except AdminError as error:
            return _json({"message": error.message}, error.status)
        except (FaultError, ScriptError, ScenarioError) as error:
            return _json({"message": str(error)}, 400)
        except UnknownJob as error:
            return _json({"message": str(error)}, 404)
        except TimeoutError as error:
            return _json({"message": str(error)}, 504)
        except MethodNotAllowed as error:
            response = _json({"message": "method not allowed here"}, 405)
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods or ()))
            return response
        except NotFound:
            return _json({"message": "no such admin endpoint"}, 404)
        except HTTPException as error:
            return _json({"message": error.description or error.name}, error.code)
        except Exception:
            logger.exception("admin request %s failed", request.path)
            return _json({"message": "internal error"}, 500)

    # -- journal -----------------------------------------------------------------

    def on_journal(self, request: Request) -> Any:
        try:
            since = int(request.args.get("since", "0"))
        except ValueError:
            raise AdminError("since must be an entry id") from None
        entries = self.harness.journal.entries(request.args.get("endpoint"), since)
        return {"entries": [entry.to_dict() for entry in entries]}

    def on_clear_journal(self, request: Request) -> Any:
        self.harness.journal.clear()
        return {"message": "journal cleared"}

    # -- faults ------------------------------------------------------------------

    def on_faults(self, request: Request) -> Any:
        return {
            "faults": [fault.to_dict() for fault in self.harness.faults.scheduled()]
        }

    def on_add_faults(self, request: Request) -> Any:
        document = _body(request)
        documents = document if isinstance(document, list) else [document]
        faults = [Fault.from_dict(entry) for entry in documents]
        return {"ids": [self.harness.faults.add(fault) for fault in faults]}

    def on_clear_faults(self, request: Request) -> Any:
        self.harness.faults.clear()
        return {"message": "faults cleared"}

    def on_remove_fault(self, request: Request, fault_id: int) -> Any:
        if not self.harness.faults.remove(fault_id):
            raise AdminError(f"no fault {fault_id}", 404)
        return {"message": f"fault {fault_id} removed"}

    # -- jobs --------------------------------------------------------------------

    def on_jobs(self, request: Request) -> Any:
        jobs = []
        for job_hash in self.harness.jobs.scripted_jobs():
            record = self.harness.app.store.lookup_job(job_hash)
            script = self.harness.jobs.script_of(job_hash)
            jobs.append(
                {
                    "job_hash": job_hash,
                    "state": None if record is None else record.state.value,
                    "current_node": None if record is None else record.current_node,
                    "script": None if script is None else script.to_dict(),
                    "node_runs": [
                        {
                            "node": run.node,
                            "process": run.process,
                            "outcome": run.outcome,
                        }
                        for run in self.harness.jobs.node_runs(job_hash)
                    ],
                }
            )
        return {"jobs": jobs}

    def on_script(self, request: Request) -> Any:
        return self.harness.jobs.default_script().to_dict()

    def on_set_script(self, request: Request) -> Any:
        script = JobScript.from_dict(_body(request))
        self.harness.jobs.set_default_script(script)
        return script.to_dict()

    def on_clear_script(self, request: Request) -> Any:
        self.harness.jobs.set_default_script(None)
        return self.harness.jobs.default_script().to_dict()

    def on_advance(self, request: Request, job_hash: str) -> Any:
        nodes = _nodes(request)
        self.harness.jobs.advance(job_hash, nodes)
        return {"advanced": [job_hash]}

    def on_advance_all(self, request: Request) -> Any:
        nodes = _nodes(request)
        running = self.harness.jobs.running_jobs()
        for job_hash in running:
            self.harness.jobs.advance(job_hash, nodes)
        return {"advanced": running}

    # -- accounts and settings ---------------------------------------------------

    def on_accounts(self, request: Request) -> Any:
        return {"accounts": self.harness.accounts()}

    def on_put_account(self, request: Request, username: str) -> Any:
        document = _body(request)
        if not isinstance(document, dict):
            raise AdminError("an account is a JSON object")
        account = AccountSpec.from_dict({**document, "username": username})
        self.harness.add_account(account)
        return {"message": f"account {username} saved"}

    def on_remove_account(self, request: Request, username: str) -> Any:
        if not self.harness.remove_account(username):
            raise AdminError(f"no account {username} was added here", 404)
        return {"message": f"account {username} removed"}

    def on_settings(self, request: Request) -> Any:
        return {"auth": self.harness.auth}

    def on_put_settings(self, request: Request) -> Any:
        document = _body(request)
        if not isinstance(document, dict) or set(document) - {"auth"}:
            raise AdminError('settings are {"auth": true | false | null}')
        auth = document.get("auth")
        if auth is not None and not isinstance(auth, bool):
            raise AdminError("auth is true, false or null")
        self.harness.set_auth(auth)
        return {"auth": self.harness.auth}

    # -- scenario and reset ------------------------------------------------------

    def on_scenario(self, request: Request) -> Any:
        self.harness.apply(Scenario.from_dict(_body(request)))
        return {"message": "scenario applied"}

    def on_reset(self, request: Request) -> Any:
        self.harness.reset()
        return {"message": "reset"}


def _body(request: Request) -> Any:
    if (request.content_length or 0) > MAX_ADMIN_BODY_BYTES:
        raise AdminError("the request body is too large", 413)
    raw = request.stream.read(MAX_ADMIN_BODY_BYTES + 1)
    if len(raw) > MAX_ADMIN_BODY_BYTES:
        raise AdminError("the request body is too large", 413)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        raise AdminError("the request body is not JSON") from None


def _nodes(request: Request) -> int:
    document = _body(request)
    nodes = document.get("nodes", 1) if isinstance(document, dict) else None
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise AdminError("nodes must be a whole number >= 1")
    return nodes


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity; Python's parser would take them."""
    raise ValueError(f"{name} is not JSON")
