"""``--control PATH``: a Unix socket that answers ``status``, ``reload`` and
``forward add|cancel`` (ssh's ``-O forward`` / ``-O cancel``).

The socket is created with mode 0600 (whoever can connect can add forwards
and read every peer address), refuses to replace a socket another process
still answers on, and is removed when the process ends.  A request is one
line of JSON, ``{"command": "status"}``, and so is its answer,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.  The
``reactor-mux status|reload|forward --control PATH`` commands speak it.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reactor_mux.errors import StartupError
from reactor_mux.io.netutil import UnixPathInUse, describe_error, listen_unix
from reactor_mux.io.reactor import Reactor
from reactor_mux.logformat import event as log_event
from reactor_mux.roles.client import Client
from reactor_mux.roles.specs import (
    ForwardKind,
    ForwardSpec,
    SpecError,
    parse_dynamic,
    parse_forward,
)
from reactor_mux.service.oneshot import OneShotServer
from reactor_mux.service.status import App, snapshot

log = logging.getLogger("reactor_mux")

MAX_CONTROL_CONNECTIONS = 8
"""Control requests served at once; more are closed."""
MAX_CONTROL_REQUEST = 4096
"""Bytes in one request line; a longer one is answered with an error."""
CONTROL_TIMEOUT = 10.0
"""Seconds a control connection may take, reading and writing included."""


class Reloaded(enum.Enum):
    """What a reload did: all of the file's changes, some of them, or nothing."""

    APPLIED = "applied"
    PARTLY = "partly applied"
    REFUSED = "refused"


Reload = Callable[[App], tuple[Reloaded, str]]
"""Re-read the configuration and apply it: (applied, what happened)."""


class ControlError(Exception):
    """A request that cannot be carried out (or not all of it: ``partial``); its
    text goes back to the caller."""

    def __init__(self, message: str, *, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


def parse_forward_words(words: list[str]) -> ForwardSpec:
    """``["-L", "8080:db:5432"]`` (or ``-L8080:db:5432`` as one word) to a spec."""
    if len(words) == 1 and len(words[0]) > 2:
        words = [words[0][:2], words[0][2:]]
    if len(words) != 2 or words[0] not in ("-L", "-R", "-D"):
        raise SpecError("give one forward: -L SPEC, -R SPEC or -D SPEC")
    flag, text = words
    if flag == "-D":
        return parse_dynamic(text)
    return parse_forward(ForwardKind.LOCAL if flag == "-L" else ForwardKind.REMOTE, text)


class ControlSocket:
    def __init__(
        self,
        reactor: Reactor,
        path: Path,
        app: App | None,
        reload: Reload | None,
        *,
        chosen: bool = True,
        carry_out: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        """Answer for ``app``, or through ``carry_out`` (a server's supervisor, which
        asks its workers)."""
        self.path = path
        self.app = app
        self.reload = reload
        self._carry_out_for = carry_out
        sock = _bind(path)
        self._inode = os.stat(path).st_ino
        self._closed = False
        self._server = OneShotServer(
            reactor, [sock], name=f"control socket {path}", terminator=b"\n",
            max_request=MAX_CONTROL_REQUEST, max_connections=MAX_CONTROL_CONNECTIONS,
            timeout=CONTROL_TIMEOUT, handle=self.respond,
            too_large=_answer(False, f"request longer than {MAX_CONTROL_REQUEST} bytes"),
        )  # fmt: skip
        log.log(logging.INFO if chosen else logging.DEBUG, "control socket at %s", path,
                extra=log_event("control_listening", address=str(path)))  # fmt: skip

    def respond(self, request: bytes) -> bytes:
        try:
            message = json.loads(request)
            if not isinstance(message, dict) or not isinstance(message.get("command"), str):
                raise ControlError('a request is {"command": "..."}')
            return _answer(True, self._carry_out(message))
        except ValueError as exc:  # JSON that does not parse, a bad forward spec
            return _answer(False, f"bad request: {exc}")
        except ControlError as exc:
            return _answer(False, str(exc), partial=exc.partial)

    def _carry_out(self, message: dict[str, Any]) -> Any:
        if self._carry_out_for is not None:
            return self._carry_out_for(message)
        assert self.app is not None
        command = message["command"]
        if command == "status":
            return snapshot(self.app)
        if command == "metrics":  # a server worker's, for its supervisor's /metrics
            from reactor_mux.service.metrics import exposition

            return exposition(self.app)
        if command in ("reload", "forward") and self.app.draining:
            raise ControlError("shutting down: nothing can be reloaded, added or cancelled now")
        if command == "reload":
            if self.reload is None:
                raise ControlError("nothing to reload: the process was started without --config")
            reloaded, outcome = self.reload(self.app)
            if reloaded is not Reloaded.APPLIED:
                raise ControlError(outcome, partial=reloaded is Reloaded.PARTLY)
            return outcome
        if command == "forward":
            return self._forward(message)
        raise ControlError(f"unknown command {command!r} (status, reload, forward)")

    def _forward(self, message: dict[str, Any]) -> str:
        client = self.app
        if client is None or not isinstance(client, Client):
            raise ControlError("forward add|cancel is for a client (the server has no forwards)")
        action, words = message.get("action"), message.get("forward")
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise ControlError('"forward" must be a list of words, such as ["-L", "8080:db:80"]')
        spec = parse_forward_words(words)
        if action == "add":
            reason = client.add_forward(spec)
            if reason is not None:
                raise ControlError(reason)
            return f"{spec.flag} added"
        if action == "cancel":
            if not client.remove_forward(spec):
                raise ControlError(f"{spec.flag} is not forwarded")
            return f"{spec.flag} cancelled"
        raise ControlError('"action" must be "add" or "cancel"')

    def close(self) -> None:
        """Stop answering and remove the socket; again, nothing (the path may be a
        successor's by then, even under the same inode number)."""
        if self._closed:
            return
        self._closed = True
        self._server.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:  # still ours, not a successor's
                self.path.unlink()


def _answer(ok: bool, value: Any, *, partial: bool = False) -> bytes:
    body: dict[str, Any] = {"ok": True, "result": value} if ok else {"ok": False, "error": value}
    if partial:
        body["partial"] = True  # some of it was carried out (a reload that added some forwards)
    return json.dumps(body).encode() + b"\n"


def _bind(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600, replacing only a dead one."""
    try:
        return listen_unix(str(path), MAX_CONTROL_CONNECTIONS)
    except UnixPathInUse as exc:
        raise StartupError(f"--control {exc.strerror}") from None
    except OSError as exc:
        raise StartupError(f"cannot create --control {path}: {describe_error(exc)}") from None


def request(path: Path, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to a running process's control socket; its answer.
    Raises ControlError when the socket cannot be reached or answers nonsense."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps(message).encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError as exc:
        raise ControlError(f"cannot reach {path}: {describe_error(exc)}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{path} answered something other than JSON") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ControlError(f"{path} answered something other than a control answer")
    return answer
