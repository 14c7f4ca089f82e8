"""A small typed client for the SiliconCompiler remote job server API.

One method per endpoint, a timeout on every request, and every exchange recorded in a
redacted form, so that a conformance report can show (and a user can replay with curl)
the request that decided a check without ever revealing a key or password.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import socket
import urllib.parse
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import requests
import urllib3

logger = logging.getLogger(__name__)

FINISHED_TEXT = "Job has no running steps."
"""The exact text ``check_progress`` answers for a job with no running steps."""

DEFAULT_REQUEST_TIMEOUT = 60.0
"""Seconds to wait for an answer: the reference server is silent while a job runs."""

DEFAULT_CONNECT_TIMEOUT = 10.0

DEFAULT_RESULTS_LIMIT = 512 * 1024 * 1024
"""Largest results archive the client reads into memory before giving up."""

TRIM_LIMIT = 2000
"""Characters of a request or response body kept in a recorded exchange."""

SECRET_FIELDS = frozenset({"key", "password"})

REDACTED = "***"

_PLACEHOLDER = "\x00SC-SECRET-{index}\x00"


class ServerUnreachable(ConnectionError):
    """The server did not answer in time or refused the connection."""

    def __init__(self, request: str, reason: str) -> None:
        super().__init__(f"{request}: {reason}")
        self.request = request
        self.reason = reason


class BrokenResponse(ServerUnreachable):
    """The server is up, but broke this one exchange: a dropped connection, a cut
    or malformed body. That judges the server's answer, not its reachability."""


class CrossOriginRedirect(requests.exceptions.RequestException):
    """A redirect to another scheme, host or port, which is not followed: every
    request of the suite carries the account's key."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _refuse_cross_origin_redirect(
    response: requests.Response, *args: Any, **kwargs: Any
) -> requests.Response:
    """A response hook: it runs before requests follows a redirect."""
    if not response.is_redirect:
        return response
    target = urllib.parse.urljoin(response.url, response.headers["Location"])
    if _origin(target) != _origin(response.url):
        response.close()
        raise CrossOriginRedirect(target)
    return response


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default_port
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


class ResponseTooLarge(ValueError):
    """A response body grew beyond the client's limit."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """An account's username and key (password or base64 private key).

    The key never appears in ``repr`` so that a failing assertion cannot print it.
    """

    username: str
    key: str = dataclasses.field(repr=False)
    key_variable: str = dataclasses.field(default="SC_KEY", compare=False)
    """Environment variable a reproduced curl line reads the key from."""

    def as_fields(self) -> dict[str, str]:
        return {"username": self.username, "key": self.key}


class Redactor:
    """Removes known secrets from any text that leaves the process.

    Secrets are removed structurally (the ``key`` and ``password`` fields of JSON
    bodies) and textually (any occurrence of a registered secret of four characters
    or more, wherever a server might echo it).
    """

    MIN_TEXTUAL_LENGTH = 4

    def __init__(self) -> None:
        self._variables: dict[str, str] = {}

    def add(self, secret: str | None, variable: str = "SC_KEY") -> None:
        if secret:
            self._variables.setdefault(secret, variable)

    def add_credentials(self, credentials: Credentials | None) -> None:
        if credentials is not None:
            self.add(credentials.key, credentials.key_variable)

    @property
    def secrets(self) -> Mapping[str, str]:
        return self._variables

    def text(self, text: str) -> str:
        for secret in sorted(self._variables, key=len, reverse=True):
            if len(secret) >= self.MIN_TEXTUAL_LENGTH:
                text = text.replace(secret, REDACTED)
        return text

    def document(self, document: Any) -> Any:
        """Return *document* with secret fields masked, at any depth."""
        if isinstance(document, dict):
            return {
                name: REDACTED
                if name in SECRET_FIELDS and isinstance(value, str)
                else self.document(value)
                for name, value in document.items()
            }
        if isinstance(document, list):
            return [self.document(value) for value in document]
        return document

    def url(self, url: str) -> str:
        """Drop any ``user:password@`` part of a URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.username is None and parts.password is None:
            return self.text(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return self.text(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))


@dataclasses.dataclass
class Exchange:
    """One request and its answer, redacted and trimmed for a report."""

    method: str
    url: str
    request_summary: str
    curl: str
    status: int | None = None
    response_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    response_body: str = ""
    elapsed: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """Return the exchange as a few lines of text for a terminal or report."""
        answer = f"{self.status}" if self.error is None else f"no answer: {self.error}"
        lines = [
            f"request:  {self.method} {self.url}",
            f"          {self.request_summary}",
            f"response: {answer}",
        ]
        if self.response_body:
            lines.append(f"          {self.response_body}")
        lines.append(f"reproduce: {self.curl}")
        return "\n".join(lines)


def trim(text: str, limit: int = TRIM_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


@dataclasses.dataclass(frozen=True)
class _Body:
    """A request body as sent, plus what a report may show of it."""

    data: bytes | str | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    headers: dict[str, str] | None = None
    summary: str = ""
    curl_arguments: tuple[str, ...] = ()


class ServerClient:
    """Speaks the remote job server API of SiliconCompiler 0.13.

    JSON bodies are sent the way the real client sends them: ``json.dumps`` of the
    object with no ``Content-Type`` header. Methods return the ``requests.Response``
    whatever its status, so checks can judge it. A server that no longer answers
    raises :class:`ServerUnreachable`; one that is up but breaks an exchange (drops
    the connection, cuts the body) raises :class:`BrokenResponse`, a check failure.
    """

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        verify: bool | str = True,
        redactor: Redactor | None = None,
        on_exchange: Callable[[Exchange], None] | None = None,
        session: requests.Session | None = None,
        results_limit: int = DEFAULT_RESULTS_LIMIT,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else f"{base_url}/"
        self.credentials = credentials
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.verify = verify
        self.redactor = redactor if redactor is not None else Redactor()
        self.redactor.add_credentials(credentials)
        self.on_exchange = on_exchange
        self.session = session if session is not None else requests.Session()
        if verify is False:
            # The user asked not to verify (--sc-insecure): a warning per request
            # would bury the report.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.results_limit = results_limit

    def with_credentials(self, credentials: Credentials | None) -> ServerClient:
        """Return a client for another account that shares this one's connections."""
        return ServerClient(
            self.base_url,
            credentials=credentials,
            request_timeout=self.request_timeout,
            connect_timeout=self.connect_timeout,
            verify=self.verify,
            redactor=self.redactor,
            on_exchange=self.on_exchange,
            session=self.session,
            results_limit=self.results_limit,
        )

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base_url, path.lstrip("/"))

    def _with_credentials(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.credentials is None:
            return fields
        return {**fields, **self.credentials.as_fields()}

    # The five endpoints -----------------------------------------------------------

    def remote_run(
        self,
        job_hash: str,
        manifest: Mapping[str, Any],
        import_archive: bytes,
        *,
        params_as_file: bool = True,
    ) -> requests.Response:
        """Upload a job: the import archive and the params envelope with the manifest.

        The real client sends ``params`` as a file part; ``params_as_file=False`` sends
        it as a plain form field, which a server must accept too.
        """
        envelope = {
            "chip_cfg": manifest,
            "params": self._with_credentials({"job_hash": job_hash}),
        }
        return self.remote_run_parts(
            import_archive=import_archive,
            params=envelope,
            params_as_file=params_as_file,
        )

    def check_progress(self, job_hash: str, job_id: str) -> requests.Response:
        """Ask whether a job still runs."""
        body = self._with_credentials({"job_hash": job_hash, "job_id": job_id})
        return self.post_json("check_progress/", body)

    def get_results(self, job_hash: str) -> requests.Response:
        """Fetch a job's results archive (read fully, up to ``results_limit``)."""
        return self.post_json(
            f"get_results/{job_hash}.tar.gz", self._with_credentials({})
        )

    def delete_job(self, job_hash: str) -> requests.Response:
        """Delete a job and its files."""
        return self.post_json(
            "delete_job/", self._with_credentials({"job_hash": job_hash})
        )

    def check_user(self) -> requests.Response:
        """Ask for the account's remaining quota."""
        return self.post_json("check_user/", self._with_credentials({}))

    # Raw requests, for checks that send what a well-behaved client never would -------

    def remote_run_parts(
        self,
        *,
        import_archive: bytes | None = None,
        params: Any = None,
        params_text: str | bytes | None = None,
        params_as_file: bool = True,
    ) -> requests.Response:
        """Send a ``remote_run`` multipart upload with any part left out or broken.

        ``params`` is serialised as JSON; ``params_text`` is sent as given instead.
        """
        placeholders: dict[str, str] = {}
        shown_params: str | None = None
        if params is not None:
            params_text = json.dumps(params)
            shown_params = json.dumps(self._placeheld(params, placeholders))
        elif params_text is not None:
            shown = (
                params_text.decode("utf-8", "replace")
                if isinstance(params_text, bytes)
                else params_text
            )
            shown_params = shown

        files: dict[str, tuple[str, bytes]] = {}
        data: dict[str, str] = {}
        curl_arguments: list[str] = []
        summary: list[str] = []
        if import_archive is not None:
            files["import"] = ("import.tar.gz", import_archive)
            curl_arguments += ["-F", "import=@import.tar.gz"]
            summary.append(f"import: {len(import_archive)} bytes")
        if params_text is not None:
            raw = (
                params_text.encode("utf-8")
                if isinstance(params_text, str)
                else params_text
            )
            if params_as_file:
                files["params"] = ("params.json", raw)
                curl_arguments += ["-F", "params=@params.json"]
            else:
                data["params"] = raw.decode("utf-8", "replace")
                curl_arguments += ["-F", "params=<params.json"]
            shown = self._show_placeheld(shown_params or "", placeholders)
            summary.append(f"params ({'file' if params_as_file else 'field'}): {shown}")

        body = _Body(
            summary="; ".join(summary) or "(no parts)",
            curl_arguments=tuple(curl_arguments),
        )
        return self._send(
            "POST",
            "remote_run/",
            body,
            requests_arguments={"files": files or None, "data": data or None},
        )

    def post_json(
        self,
        path: str,
        document: Any,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POST ``json.dumps(document)`` with no Content-Type, as the real client."""
        placeholders: dict[str, str] = {}
        text = json.dumps(document)
        shown = json.dumps(self._placeheld(document, placeholders))
        return self.post_bytes(
            path,
            text.encode("utf-8"),
            headers=headers,
            shown=self._show_placeheld(shown, placeholders),
            curl_text=shown,
            placeholders=placeholders,
        )

    def post_bytes(
        self,
        path: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        shown: str | None = None,
        curl_text: str | None = None,
        placeholders: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POST a body exactly as given (malformed JSON, empty bodies ...)."""
        text = payload.decode("utf-8", "replace")
        curl_arguments: list[str] = []
        for name, value in (headers or {}).items():
            curl_arguments += ["-H", f"{name}: {value}"]
        curl_arguments += [
            "--data-binary",
            curl_text if curl_text is not None else text,
        ]
        body = _Body(
            data=payload,
            headers=dict(headers or {}),
            summary=shown if shown is not None else self.redactor.text(text),
            curl_arguments=tuple(curl_arguments),
        )
        return self._send("POST", path, body, placeholders=placeholders)

    def request(
        self,
        method: str,
        path: str,
        *,
        payload: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send any method to any path, for transport checks."""
        curl_arguments: list[str] = []
        if payload is not None:
            curl_arguments += ["--data-binary", payload.decode("utf-8", "replace")]
        body = _Body(
            data=payload,
            headers=dict(headers or {}),
            summary=self.redactor.text(
                payload.decode("utf-8", "replace") if payload else "(no body)"
            ),
            curl_arguments=tuple(curl_arguments),
        )
        return self._send(method, path, body)

    # Plumbing -------------------------------------------------------------------------

    def _placeheld(self, document: Any, placeholders: dict[str, str]) -> Any:
        """Replace secret field values by placeholders a curl line can expand later."""
        if isinstance(document, dict):
            result: dict[str, Any] = {}
            for name, value in document.items():
                if name in SECRET_FIELDS and isinstance(value, str):
                    variable = self.redactor.secrets.get(value)
                    if variable is None:
                        result[name] = value
                        continue
                    marker = _PLACEHOLDER.format(index=len(placeholders))
                    placeholders[marker] = variable
                    result[name] = marker
                else:
                    result[name] = self._placeheld(value, placeholders)
            return result
        if isinstance(document, list):
            return [self._placeheld(value, placeholders) for value in document]
        return document

    def _show_placeheld(self, text: str, placeholders: Mapping[str, str]) -> str:
        for marker in placeholders:
            text = text.replace(json.dumps(marker)[1:-1], REDACTED)
        return trim(self.redactor.text(text))

    def _curl(
        self,
        method: str,
        url: str,
        body: _Body,
        placeholders: Mapping[str, str] | None,
    ) -> str:
        words = ["curl", "-sS", "-X", method]
        if self.verify is False:
            words.append("-k")
        elif isinstance(self.verify, str):
            words += ["--cacert", self.verify]
        words += [*body.curl_arguments, self.redactor.url(url)]
        line = shlex.join(words)
        for marker, variable in (placeholders or {}).items():
            escaped = json.dumps(marker)[1:-1]
            line = line.replace(escaped, f"'\"${variable}\"'")
        line = self.redactor.text(line)
        return trim(line, 4 * TRIM_LIMIT)

    def _send(
        self,
        method: str,
        path: str,
        body: _Body,
        *,
        requests_arguments: Mapping[str, Any] | None = None,
        placeholders: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = self.url(path)
        exchange = Exchange(
            method=method,
            url=self.redactor.url(url),
            request_summary=trim(body.summary),
            curl=self._curl(method, url, body, placeholders),
        )
        logger.debug("%s %s", method, exchange.url)
        arguments: dict[str, Any] = {
            "data": body.data,
            "headers": body.headers,
            "timeout": (self.connect_timeout, self.request_timeout),
            "verify": self.verify,
            "stream": True,
            "hooks": {"response": [_refuse_cross_origin_redirect]},
        }
        arguments.update(requests_arguments or {})
        try:
            response = self.session.request(method, url, **arguments)
        except requests.exceptions.RequestException as error:
            exchange.error = self._describe_error(error)
            self._record(exchange)
            unreachable = (
                isinstance(
                    error, (requests.exceptions.Timeout, requests.exceptions.SSLError)
                )
                or not self._accepts_connections()
            )
            failure = ServerUnreachable if unreachable else BrokenResponse
            raise failure(f"{method} {exchange.url}", exchange.error) from None
        try:
            self._read_body(response)
        except requests.exceptions.RequestException as error:
            exchange.status = response.status_code
            exchange.error = f"answered {response.status_code}, then " + (
                self._describe_error(error)
            )
            self._record(exchange)
            raise BrokenResponse(f"{method} {exchange.url}", exchange.error) from None
        except ResponseTooLarge as error:
            exchange.error = str(error)
            self._record(exchange)
            raise

        exchange.status = response.status_code
        exchange.elapsed = response.elapsed.total_seconds()
        exchange.response_headers = {
            name: self.redactor.text(value) for name, value in response.headers.items()
        }
        exchange.response_body = self._show_response(response)
        logger.debug("%s %s -> %s", method, exchange.url, response.status_code)
        self._record(exchange)
        return response

    def _read_body(self, response: requests.Response) -> None:
        """Read the body with a size limit: a runaway stream cannot exhaust memory."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=1024 * 1024):
            size += len(chunk)
            if size > self.results_limit:
                response.close()
                raise ResponseTooLarge(
                    f"response body exceeds {self.results_limit} bytes"
                )
            chunks.append(chunk)
        response._content = b"".join(chunks)
        response._content_consumed = True

    def _accepts_connections(self) -> bool:
        """Whether the server still takes connections after one exchange broke."""
        address = urllib.parse.urlsplit(self.base_url)
        port = address.port or (443 if address.scheme == "https" else 80)
        try:
            socket.create_connection(
                (address.hostname or "", port), timeout=self.connect_timeout
            ).close()
        except OSError:
            return False
        return True

    def _show_response(self, response: requests.Response) -> str:
        content_type = response.headers.get("Content-Type", "")
        if response.content[:2] == b"\x1f\x8b" or "gzip" in content_type:
            return f"({len(response.content)} bytes of gzip data)"
        return trim(self.redactor.text(response.content.decode("utf-8", "replace")))

    def _describe_error(self, error: requests.exceptions.RequestException) -> str:
        if isinstance(error, requests.exceptions.ConnectTimeout):
            return f"no connection within {self.connect_timeout:g} s"
        if isinstance(error, requests.exceptions.Timeout):
            return f"no answer within {self.request_timeout:g} s"
        if isinstance(error, requests.exceptions.SSLError):
            return "TLS handshake failed (see --sc-ca-bundle / --sc-insecure)"
        if isinstance(error, CrossOriginRedirect):
            return (
                f"redirected to another origin ({self.redactor.url(error.location)}); "
                "not followed, the request carries the account's key"
            )
        if isinstance(error, requests.exceptions.ChunkedEncodingError):
            return "the body broke off (invalid chunked encoding)"
        if isinstance(error, requests.exceptions.ContentDecodingError):
            return "the body could not be decoded"
        if isinstance(error, requests.exceptions.ConnectionError):
            return "connection refused or dropped"
        return self.redactor.text(type(error).__name__)

    def _record(self, exchange: Exchange) -> None:
        if self.on_exchange is not None:
            self.on_exchange(exchange)


def json_message(response: requests.Response) -> str | None:
    """Return the ``message`` string of an error body, or None when there is none."""
    try:
        document = response.json()
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return document["message"]
    return None


def statuses(responses: Iterable[requests.Response]) -> list[int]:
    return [response.status_code for response in responses]
