"""Wrapping grpc.aio method handlers so interceptors can run code around each RPC.

An interceptor of the server's chain is a :class:`ScopedInterceptor`: for each
method it gives a :class:`Stage` (built once per method: metric series, a
bound logger, ...), whose ``enter`` runs before the handler and ``leave``
after it. :func:`wrap_stages` runs the stages of a whole chain in one scope
per call (a loop over plain methods, not one async context manager per
interceptor), for all four handler kinds, including server-streaming
coroutine handlers that write with ``context.write`` (they must stay
coroutine functions for grpc.aio to drive them) and async generators.

``decode_leniently`` keeps a request body that is not a valid protobuf
message from failing inside grpc (which answers UNKNOWN, with the parser's
text and no details, before any interceptor runs): the body becomes an
:class:`UndecodableRequest` and the behaviour raises the caller's error instead.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Continuation = Callable[
        [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
    ]


def grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    """The go-grpc-prometheus name of a handler's kind."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


class Stage:
    """One interceptor's part in the calls of one method (see :func:`wrap_stages`).

    ``enter`` runs before the handler, outermost stage first, and returns a
    token; ``leave`` runs after it, innermost first, with that token and the
    exception the call is ending with (None on success), so an outer stage sees
    what the inner ones made of it. A stage that ``recovers`` maps an
    ``Exception`` raised inside it in :meth:`recover`, which must raise what the
    caller gets instead (``context.abort``'s error, say). An exception from
    ``enter`` counts as raised inside that stage: its ``recover`` and ``leave``
    (with the token None) still run, the inner stages' do not.
    """

    __slots__ = ()

    #: True when :meth:`recover` maps the exceptions raised inside this stage.
    recovers = False

    def enter(self, context: Context, request: Any) -> Any:
        """Before the handler; ``request`` is None for a streaming request."""
        return None

    def leave(self, context: Context, token: Any, error: BaseException | None) -> None:
        """After the handler (and the inner stages' leave)."""
        return

    async def recover(self, context: Context, error: Exception) -> None:
        """Raise what the caller gets for ``error`` (called only when ``recovers``)."""
        raise error


def _enter(stages: Sequence[Stage], context: Context, request: Any, tokens: list[Any]) -> None:
    for stage in stages:
        tokens.append(None)  # entered, even if enter raises (see Stage)
        tokens[-1] = stage.enter(context, request)


async def _unwind(
    stages: Sequence[Stage], tokens: list[Any], context: Context, error: BaseException
) -> BaseException:
    """The entered stages' recover and leave, innermost first; the exception to raise."""
    for index in range(len(tokens) - 1, -1, -1):
        stage = stages[index]
        if stage.recovers and isinstance(error, Exception):
            try:
                await stage.recover(context, error)
            except BaseException as raised:
                error = raised
        try:
            stage.leave(context, tokens[index], error)
        except BaseException as raised:
            error = raised
    return error


def _leave(stages: Sequence[Stage], tokens: list[Any], context: Context) -> None:
    """The stages' leave after a successful handler. A stage's token goes before its leave
    runs: if one raises, ``_unwind`` takes over with the stages outside it."""
    while tokens:
        token = tokens.pop()
        stages[len(tokens)].leave(context, token, None)


def _unary_response(
    behavior: Callable[..., Any], stages: Sequence[Stage], unary_request: bool
) -> Callable[..., Any]:
    async def wrapped(request: Any, context: Context) -> Any:
        tokens: list[Any] = []
        try:
            _enter(stages, context, request if unary_request else None, tokens)
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            _leave(stages, tokens, context)
        except BaseException as exc:
            raise await _unwind(stages, tokens, context, exc)  # noqa: B904  # the chain's own
        return result

    return wrapped


def _stream_response(
    behavior: Callable[..., Any], stages: Sequence[Stage], unary_request: bool
) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(behavior):
        # A handler writing with context.write(): it must stay a coroutine function.
        async def wrapped_writer(request: Any, context: Context) -> None:
            tokens: list[Any] = []
            try:
                _enter(stages, context, request if unary_request else None, tokens)
                await behavior(request, context)
                _leave(stages, tokens, context)
            except BaseException as exc:
                raise await _unwind(stages, tokens, context, exc)  # noqa: B904

        return wrapped_writer

    async def wrapped_generator(request: Any, context: Context) -> AsyncIterator[Any]:
        tokens: list[Any] = []
        try:
            _enter(stages, context, request if unary_request else None, tokens)
            responses = behavior(request, context)
            if hasattr(responses, "__aiter__"):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response
            _leave(stages, tokens, context)
        except BaseException as exc:
            raise await _unwind(stages, tokens, context, exc)  # noqa: B904

    return wrapped_generator


class UndecodableRequest:
    """Stands in for a request body the method's deserializer could not parse."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return UndecodableRequest(exc)

    return deserialize


def decode_leniently(
    handler: grpc.RpcMethodHandler[Any, Any],
    reject: Callable[[UndecodableRequest], BaseException],
) -> grpc.RpcMethodHandler[Any, Any]:
    """A copy of a unary-request ``handler`` whose behaviour raises ``reject(request)``
    when the request body did not decode. Streaming requests are left as they are."""
    deserializer = handler.request_deserializer
    if deserializer is None or handler.request_streaming:
        return handler
    behavior: Callable[..., Any] | None = handler.unary_unary or handler.unary_stream
    if behavior is None:
        return handler

    def check(request: Any) -> None:
        if isinstance(request, UndecodableRequest):
            raise reject(request)

    if handler.unary_unary is not None:

        async def unary(request: Any, context: Context) -> Any:
            check(request)
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(
            unary, _lenient(deserializer), handler.response_serializer
        )
    if inspect.iscoroutinefunction(behavior):

        async def writer(request: Any, context: Context) -> None:
            check(request)
            await behavior(request, context)

        return grpc.unary_stream_rpc_method_handler(
            writer, _lenient(deserializer), handler.response_serializer
        )

    async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
        check(request)
        responses = behavior(request, context)
        if hasattr(responses, "__aiter__"):
            async for response in responses:
                yield response
        else:
            for response in responses:
                yield response

    return grpc.unary_stream_rpc_method_handler(
        generator, _lenient(deserializer), handler.response_serializer
    )


def wrap_stages(
    handler: grpc.RpcMethodHandler[Any, Any], stages: Sequence[Stage]
) -> grpc.RpcMethodHandler[Any, Any]:
    """A copy of ``handler`` whose behaviour runs inside ``stages`` (outermost first)."""
    stages = tuple(stages)
    unary_request = not handler.request_streaming
    kwargs: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary_response(handler.unary_unary, stages, unary_request), **kwargs
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream_response(handler.unary_stream, stages, unary_request), **kwargs
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary_response(handler.stream_unary, stages, unary_request), **kwargs
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _stream_response(handler.stream_stream, stages, unary_request), **kwargs
        )
    return handler


class _CountingContext:
    """A servicer context whose ``write`` also calls ``on_sent`` (everything else passes)."""

    __slots__ = ("_context", "_on_sent")

    def __init__(self, context: Context, on_sent: Callable[[], None]) -> None:
        self._context = context
        self._on_sent = on_sent

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._on_sent()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _counted_requests(
    requests: AsyncIterator[Any], on_received: Callable[[], None]
) -> AsyncIterator[Any]:
    async for request in requests:
        on_received()
        yield request


def count_stream_messages(
    handler: grpc.RpcMethodHandler[Any, Any],
    on_received: Callable[[], None],
    on_sent: Callable[[], None],
) -> grpc.RpcMethodHandler[Any, Any]:
    """A copy of a streaming ``handler`` calling ``on_received`` per request message
    read from a request stream and ``on_sent`` per response message written to a
    response stream. The unary sides are not counted here (the caller counts them
    without a wrapper); a unary-unary handler comes back unchanged."""
    if not (handler.request_streaming or handler.response_streaming):
        return handler
    behavior: Callable[..., Any] = (
        handler.unary_stream or handler.stream_unary or handler.stream_stream  # type: ignore[assignment]
    )
    kwargs: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    def arguments(request: Any, context: Context) -> tuple[Any, Any]:
        if handler.request_streaming:
            request = _counted_requests(request, on_received)
        if handler.response_streaming:
            context = _CountingContext(context, on_sent)  # type: ignore[assignment]
        return request, context

    if not handler.response_streaming:

        async def unary_response(request: Any, context: Context) -> Any:
            result = behavior(*arguments(request, context))
            return await result if inspect.isawaitable(result) else result

        return grpc.stream_unary_rpc_method_handler(unary_response, **kwargs)
    make = (
        grpc.stream_stream_rpc_method_handler
        if handler.request_streaming
        else grpc.unary_stream_rpc_method_handler
    )
    if inspect.iscoroutinefunction(behavior):

        async def writer(request: Any, context: Context) -> None:
            await behavior(*arguments(request, context))

        return make(writer, **kwargs)

    async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
        responses = behavior(*arguments(request, context))
        if hasattr(responses, "__aiter__"):
            async for response in responses:
                yield response
                on_sent()
        else:
            for response in responses:
                yield response
                on_sent()

    return make(generator, **kwargs)


class ScopedInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Base class: runs every RPC's behaviour inside the interceptor's :class:`Stage`.

    :meth:`stage` (once per method) and :meth:`adapt` are the whole of what it
    does to a method's handler, so :class:`InterceptorChain` can build the
    wrapped handler of a chain of them once per method, with every stage in
    one scope per call.
    """

    async def intercept_service(  # type: ignore[override]  # None: method unknown here
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.wrap(handler, method_name(handler_call_details))

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` (of ``method``), adapted, with its behaviour inside this stage."""
        stage = self.stage(method, grpc_type(handler))
        adapted = self.adapt(handler, method)
        return adapted if stage is None else wrap_stages(adapted, (stage,))

    def adapt(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler the stage wraps; override to change it first (``handler`` as is here)."""
        return handler

    def stage(self, method: str, kind: str) -> Stage | None:
        """This interceptor's part in every call of ``method`` (None: nothing per call)."""
        raise NotImplementedError


class InterceptorChain(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Scoped interceptors run as one: one scope per call, built once per method.

    grpc.aio runs every interceptor's ``intercept_service`` on every call, and
    each one would build a new wrapped handler; the result depends only on the
    method's own handler, so the chain builds it on a method's first call and
    hands out the same one afterwards (while the method's handler is the same
    object). Per call, the interceptors' stages run in one scope, outermost
    first, with the same outcome as separately nested interceptors.
    """

    def __init__(self, interceptors: Sequence[ScopedInterceptor]) -> None:
        self.interceptors = tuple(interceptors)
        self._built: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(  # type: ignore[override]  # None: method unknown here
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = method_name(handler_call_details)
        built = self._built.get(method)
        if built is not None and built[0] is handler:
            return built[1]
        wrapped = self.build(handler, method)
        self._built[method] = (handler, wrapped)
        return wrapped

    def build(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` adapted by every interceptor (innermost first), in their stages."""
        kind = grpc_type(handler)
        stages: list[Stage] = []
        for interceptor in reversed(self.interceptors):  # the innermost adapts first
            handler = interceptor.adapt(handler, method)
            stage = interceptor.stage(method, kind)
            if stage is not None:
                stages.append(stage)
        return wrap_stages(handler, stages[::-1]) if stages else handler


def chain_interceptors(
    interceptors: Sequence[grpc.aio.ServerInterceptor],  # type: ignore[type-arg]
) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """``interceptors`` (outermost first) with their leading run of scoped ones as one chain."""
    scoped: list[ScopedInterceptor] = []
    for interceptor in interceptors:
        if not isinstance(interceptor, ScopedInterceptor):
            break
        scoped.append(interceptor)
    rest = list(interceptors[len(scoped) :])
    return [InterceptorChain(scoped), *rest] if scoped else rest


def method_name(details: grpc.HandlerCallDetails) -> str:
    method: str | bytes = details.method
    return method.decode() if isinstance(method, bytes) else method
