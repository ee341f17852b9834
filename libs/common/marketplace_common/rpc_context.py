"""What the server knows about the RPC being served, per asyncio context.

The server interceptors fill a :class:`CallInfo` at the start of every RPC;
the client side reads it to pass the request id and the remaining deadline on
to downstream calls (see ``client.call_timeout``).
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

from marketplace_common.auth import Principal

REQUEST_ID_KEY = "x-request-id"


@dataclass(slots=True)
class CallInfo:
    """One RPC on the server side.

    ``deadline`` is on the ``time.monotonic()`` clock (None: the caller set none).
    """

    method: str
    grpc_type: str
    request_id: str
    peer: str = ""
    deadline: float | None = None
    principal: Principal | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def service(self) -> str:
        """The full service name, ``marketplace.bids.v1.BidService``."""
        return split_method(self.method)[0]

    @property
    def method_name(self) -> str:
        """The bare method name, ``GetBid``."""
        return split_method(self.method)[1]

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline (negative when past), None without one."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()


_current_call: ContextVar[CallInfo | None] = ContextVar("marketplace_call", default=None)


def current_call() -> CallInfo | None:
    """The RPC being served in this context, if any."""
    return _current_call.get()


def set_current_call(call: CallInfo | None) -> Token[CallInfo | None]:
    """Bind ``call`` to this context; returns a token for :func:`reset_current_call`."""
    return _current_call.set(call)


def reset_current_call(token: Token[CallInfo | None]) -> None:
    """Undo :func:`set_current_call` (ignores a token from another context)."""
    # ValueError: an async generator finalised outside the RPC's context.
    with contextlib.suppress(ValueError):
        _current_call.reset(token)


_bound_request_id: ContextVar[str | None] = ContextVar("marketplace_request_id", default=None)


def bind_request_id(request_id: str | None) -> Token[str | None]:
    """Carry ``request_id`` into the outgoing calls of this context outside any RPC
    (a worker continuing the work a call started); undo with :func:`unbind_request_id`."""
    return _bound_request_id.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    """Undo :func:`bind_request_id` (ignores a token from another context)."""
    with contextlib.suppress(ValueError):
        _bound_request_id.reset(token)


def outgoing_request_id() -> str | None:
    """The request id outgoing calls carry: the current RPC's, else the bound one."""
    call = _current_call.get()
    return call.request_id if call is not None else _bound_request_id.get()


def split_method(method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    _, _, rest = method.partition("/")
    service, _, name = rest.partition("/")
    return (service, name) if name else ("unknown", method)
