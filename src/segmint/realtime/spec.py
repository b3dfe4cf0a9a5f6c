"""Request bodies of the Segment HTTP Tracking API, parsed into events or rejections.

Speaks what Segment and RudderStack SDKs send (``/v1/track``, ``/v1/identify``,
``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias`` with one message per
body, ``/v1/batch`` with ``{"batch": [...], "sentAt": ..., "context": ...}``).
Pure functions: no I/O, no database. A request that cannot be read at all raises
:class:`RequestRejected` (a 4xx for the whole request); a message that can be read
but is wrong becomes a :class:`~segmint.realtime.events.Rejection` carrying the raw
bytes and a reason code from :data:`REASONS`, so nothing the client sent is lost.

Unlike Segment, invalid messages are never silently accepted, and ``null`` fields
are treated as absent (the Python SDK sends ``"anonymousId": null``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from segmint.errors import UserInputError
from segmint.realtime.events import Event, EventType, Rejection

__all__ = [
    "DEFAULT_LIMITS",
    "REASONS",
    "Limits",
    "RequestRejected",
    "parse_batch",
    "parse_call",
    "parse_message",
]

logger = logging.getLogger(__name__)

REASONS: dict[str, str] = {
    # whole request (RequestRejected.code)
    "invalid_json": "the body (or message) is not valid JSON",
    "not_an_object": "a JSON object was expected",
    "body_too_large": "the batch body exceeds the batch size limit",
    "batch_too_large": "the batch holds more messages than allowed",
    "missing_batch": 'the batch body has no "batch" field',
    "batch_not_a_list": 'the "batch" field is not a list',
    "event_too_large": "a single message exceeds the event size limit",
    "invalid_gzip": "a body sent with Content-Encoding: gzip cannot be decompressed",
    # one message (Rejection.reason); invalid_field and invalid_timestamp also
    # apply to the batch envelope's "context" and "sentAt"
    "type_mismatch": 'the message "type" disagrees with the endpoint it was sent to',
    "missing_type": 'a batch message has no "type"',
    "unknown_type": '"type" is not a Segment call type',
    "missing_identity": "neither userId nor anonymousId is set",
    "missing_event_name": 'a track call has no "event" name',
    "missing_previous_id": 'an alias call has no "previousId"',
    "missing_group_id": 'a group call has no "groupId"',
    "invalid_field": "a field has the wrong type, is too long or contains a NUL character",
    "invalid_timestamp": "a timestamp is not ISO-8601 or lies outside the years 1970-2262",
    # set by the processor, not the parser
    "suppressed": "the message belongs to an erased person; it is counted and not kept",
}

MAX_ID_CHARS = 255
"""Longest ``userId``, ``anonymousId``, ``messageId``, ``previousId``, ``groupId``."""
MAX_EVENT_NAME_CHARS = 200
"""Longest ``event`` name of a track call."""
MIN_YEAR, MAX_YEAR = 1970, 2262
"""Accepted years of every timestamp (2262 is where nanosecond timestamps end)."""

_TYPES: dict[str, EventType] = {t.value: t for t in EventType}
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
_UNHASHED = frozenset({"sentAt", "messageId"})
_BOM = b"\xef\xbb\xbf"
_PREVIEW_CHARS = 40


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and clock limits of the tracking API (Segment's published limits by default).

    Parameters
    ----------
    max_event_bytes
        Largest message, in bytes of its JSON.
    max_batch_bytes
        Largest ``/v1/batch`` body.
    max_batch_events
        Most messages in one batch.
    future_tolerance
        How far beyond ``received_at`` a corrected timestamp may lie before the
        event is flagged ``future`` (it is still accepted).

    Examples
    --------
    >>> Limits().max_event_bytes
    32768
    >>> Limits(max_batch_events=100).max_batch_events
    100
    """

    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    max_batch_events: int = 2500
    future_tolerance: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        for name in ("max_event_bytes", "max_batch_bytes", "max_batch_events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"must be a positive integer, got {value!r}", where=name)
        if not isinstance(self.future_tolerance, timedelta) or self.future_tolerance < timedelta():
            raise UserInputError(
                f"must be a non-negative duration, got {self.future_tolerance!r}",
                where="future_tolerance",
            )


DEFAULT_LIMITS = Limits()
"""The limits of DESIGN §6: 32 KB per event, 500 KB and 2,500 events per batch."""


class RequestRejected(UserInputError):
    """The whole request is refused: nothing in it is accepted.

    Parameters
    ----------
    status
        HTTP status to answer with: 400 (unreadable) or 413 (too large).
    code
        Reason code, a key of :data:`REASONS`.
    message
        What is wrong, in one sentence.
    where
        The field at fault, when there is one.

    Examples
    --------
    >>> from datetime import datetime
    >>> try:
    ...     parse_batch(b"{", received_at=datetime(2026, 1, 1))
    ... except RequestRejected as e:
    ...     print(e.status, e.code)
    400 invalid_json
    """

    def __init__(self, status: int, code: str, message: str, *, where: str | None = None) -> None:
        super().__init__(message, where=where)
        self.status = status
        self.code = code


class _Invalid(Exception):
    """Internal: one message is wrong (becomes a Rejection)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_call(
    body: bytes,
    call: EventType,
    *,
    received_at: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> Event | Rejection:
    """Parse the body of a single call (``/v1/track``, ``/v1/identify``, ...).

    Parameters
    ----------
    body
        The request body: one JSON message.
    call
        The call type named by the endpoint; a ``type`` in the body must agree.
    received_at
        When the request arrived (naive UTC; an aware value is converted).
    limits
        Size and clock limits.

    Returns
    -------
    Event or Rejection
        The accepted event (``raw`` is ``body``), or why the message was refused.

    Raises
    ------
    RequestRejected
        413 ``event_too_large`` when the body exceeds ``limits.max_event_bytes``;
        400 ``invalid_json`` or ``not_an_object`` when it is not a JSON object.

    Examples
    --------
    >>> from datetime import datetime
    >>> body = b'{"userId": "u1", "event": "Signed Up", "timestamp": "2026-01-01T10:00:00Z"}'
    >>> event = parse_call(body, EventType.track, received_at=datetime(2026, 1, 1, 10, 0, 5))
    >>> event.event, event.user_id, event.timestamp
    ('Signed Up', 'u1', datetime.datetime(2026, 1, 1, 10, 0))
    """
    if len(body) > limits.max_event_bytes:
        raise RequestRejected(
            413,
            "event_too_large",
            f"the body is {len(body)} bytes; at most {limits.max_event_bytes} are accepted",
        )
    message = _loads(body)
    if not isinstance(message, dict):
        raise RequestRejected(
            400, "not_an_object", f"expected a JSON object, got {_json_type(message)}"
        )
    received = _naive_utc(received_at)
    return _parse(
        message,
        body,
        received_at=received,
        future_after=received + limits.future_tolerance,
        default_sent_at=None,
        call=call,
        index=None,
    )


def parse_batch(
    body: bytes,
    *,
    received_at: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[list[Event], list[Rejection]]:
    """Parse the body of ``/v1/batch``.

    Batch-level ``context`` is merged into each message's context (the message's
    keys win) and batch-level ``sentAt`` applies to messages without one, as
    Segment does. What a message inherits is written into its ``raw`` bytes, so a
    stored message parses the same way again on its own.

    Parameters
    ----------
    body
        The request body ``{"batch": [...], "sentAt": ..., "context": ...}``.
    received_at
        When the request arrived (naive UTC; an aware value is converted).
    limits
        Size and clock limits.

    Returns
    -------
    tuple of (list of Event, list of Rejection)
        Accepted events in batch order, and the refused messages with their
        ``index`` in the batch.

    Raises
    ------
    RequestRejected
        413 ``body_too_large`` or ``batch_too_large``; 400 ``invalid_json``,
        ``not_an_object``, ``missing_batch``, ``batch_not_a_list``, or
        ``invalid_field`` / ``invalid_timestamp`` for a bad batch-level
        ``context`` / ``sentAt``.

    Examples
    --------
    >>> from datetime import datetime
    >>> body = (
    ...     b'{"batch": [{"type": "identify", "userId": "u1", "traits": {"plan": "pro"}},'
    ...     b' {"type": "track", "userId": "u1"}], "sentAt": "2026-01-01T10:00:00Z"}'
    ... )
    >>> events, rejected = parse_batch(body, received_at=datetime(2026, 1, 1, 10, 0, 1))
    >>> [e.type.value for e in events], [(r.index, r.reason) for r in rejected]
    (['identify'], [(1, 'missing_event_name')])
    """
    if len(body) > limits.max_batch_bytes:
        raise RequestRejected(
            413,
            "body_too_large",
            f"the body is {len(body)} bytes; at most {limits.max_batch_bytes} are accepted",
        )
    envelope = _loads(body)
    if not isinstance(envelope, dict):
        raise RequestRejected(
            400, "not_an_object", f"expected a JSON object, got {_json_type(envelope)}"
        )
    if "batch" not in envelope:
        raise RequestRejected(400, "missing_batch", 'the body has no "batch" list', where="batch")
    items = envelope["batch"]
    if not isinstance(items, list):
        raise RequestRejected(
            400,
            "batch_not_a_list",
            f"expected a list, got {_json_type(items)}",
            where="batch",
        )
    if len(items) > limits.max_batch_events:
        raise RequestRejected(
            413,
            "batch_too_large",
            f"the batch holds {len(items)} messages; at most {limits.max_batch_events} "
            "are accepted",
            where="batch",
        )
    shared_context = envelope.get("context")
    if shared_context is not None and not isinstance(shared_context, dict):
        raise RequestRejected(
            400,
            "invalid_field",
            f"expected an object, got {_json_type(shared_context)}",
            where="context",
        )
    shared_sent_at = envelope.get("sentAt")
    if shared_sent_at is not None:
        try:
            _timestamp(shared_sent_at, "sentAt")
        except _Invalid as e:
            raise RequestRejected(400, "invalid_timestamp", e.detail) from None
    inherit = bool(shared_context) or shared_sent_at is not None

    received = _naive_utc(received_at)
    future_after = received + limits.future_tolerance
    max_bytes = limits.max_event_bytes
    events: list[Event] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            rejected.append(
                Rejection(
                    "not_an_object",
                    f"batch[{index}]: expected an object, got {_json_type(item)}",
                    orjson.dumps(item),
                    index,
                )
            )
            continue
        raw = orjson.dumps(item)
        size = len(raw)
        if inherit:
            item = _inherit(item, shared_context, shared_sent_at)
            raw = orjson.dumps(item)
        if size > max_bytes:
            rejected.append(
                Rejection(
                    "event_too_large",
                    f"batch[{index}]: the message is {size} bytes; at most {max_bytes} "
                    "are accepted",
                    raw,
                    index,
                    _readable_message_id(item),
                )
            )
            continue
        result = _parse(
            item,
            raw,
            received_at=received,
            future_after=future_after,
            default_sent_at=None,
            call=None,
            index=index,
        )
        if isinstance(result, Event):
            events.append(result)
        else:
            rejected.append(result)
    if rejected:
        logger.debug("batch: %d accepted, %d rejected", len(events), len(rejected))
    return events, rejected


def parse_message(
    message: Any,
    *,
    received_at: datetime,
    batch_sent_at: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
    index: int | None = None,
    call: EventType | None = None,
) -> Event | Rejection:
    """Validate and normalise one message that is already decoded from JSON.

    Used for stream entries and for reprocessing failed events; never raises for
    bad input.

    Parameters
    ----------
    message
        The decoded message (anything: a non-object is rejected).
    received_at
        When segmint received it (naive UTC; an aware value is converted).
    batch_sent_at
        ``sentAt`` of the enclosing batch, used when the message has none.
    limits
        Size and clock limits; a message whose JSON exceeds
        ``limits.max_event_bytes`` is rejected as ``event_too_large``.
    index
        Position in its batch, copied into a rejection.
    call
        The endpoint's call type: ``type`` may then be omitted but must agree if
        present. Without it ``type`` is required.

    Returns
    -------
    Event or Rejection
        ``raw`` of either is ``orjson.dumps(message)``.

    Examples
    --------
    >>> from datetime import datetime
    >>> msg = {"type": "identify", "anonymousId": 42, "traits": {"plan": "pro"}}
    >>> event = parse_message(msg, received_at=datetime(2026, 1, 1))
    >>> event.anonymous_id, event.traits, event.message_id[:4]
    ('42', {'plan': 'pro'}, 'seg-')
    >>> parse_message({"type": "track", "userId": "u1"}, received_at=datetime(2026, 1, 1)).reason
    'missing_event_name'
    """
    try:
        raw = orjson.dumps(message)
    except (TypeError, orjson.JSONEncodeError) as e:
        return Rejection(
            "invalid_json",
            f"the message cannot be written as JSON: {e}",
            repr(message).encode("utf-8", "backslashreplace"),
            index,
            _readable_message_id(message),
        )
    if not isinstance(message, dict):
        return Rejection(
            "not_an_object", f"expected an object, got {_json_type(message)}", raw, index
        )
    if len(raw) > limits.max_event_bytes:
        return Rejection(
            "event_too_large",
            f"the message is {len(raw)} bytes; at most {limits.max_event_bytes} are accepted",
            raw,
            index,
            _readable_message_id(message),
        )
    received = _naive_utc(received_at)
    return _parse(
        message,
        raw,
        received_at=received,
        future_after=received + limits.future_tolerance,
        default_sent_at=None if batch_sent_at is None else _naive_utc(batch_sent_at),
        call=call,
        index=index,
    )


# --- the per-message work ------------------------------------------------------------


def _parse(
    message: dict[str, Any],
    raw: bytes,
    *,
    received_at: datetime,
    future_after: datetime,
    default_sent_at: datetime | None,
    call: EventType | None,
    index: int | None,
) -> Event | Rejection:
    try:
        return _event(
            message,
            raw,
            received_at=received_at,
            future_after=future_after,
            default_sent_at=default_sent_at,
            call=call,
        )
    except _Invalid as e:
        return Rejection(e.reason, e.detail, raw, index, _readable_message_id(message))


def _event(
    message: dict[str, Any],
    raw: bytes,
    *,
    received_at: datetime,
    future_after: datetime,
    default_sent_at: datetime | None,
    call: EventType | None,
) -> Event:
    get = message.get
    kind = _call_type(get("type"), call)

    message_id = get("messageId")
    if message_id is None or message_id == "":
        message_id = None
    elif not isinstance(message_id, str):
        raise _Invalid(
            "invalid_field", f"messageId: expected a string, got {_json_type(message_id)}"
        )
    else:
        _check_text(message_id, "messageId", MAX_ID_CHARS)

    user_id = _identifier(get("userId"), "userId")
    anonymous_id = _identifier(get("anonymousId"), "anonymousId")
    if user_id is None and anonymous_id is None:
        raise _Invalid("missing_identity", "userId, anonymousId: neither is set")

    name: str | None = None
    previous_id: str | None = None
    group_id: str | None = None
    if kind is EventType.track:
        name = _event_name(get("event"))
    elif kind is EventType.page or kind is EventType.screen:
        name = get("name")
        if name is not None:
            if not isinstance(name, str):
                raise _Invalid("invalid_field", f"name: expected a string, got {_json_type(name)}")
            if "\x00" in name:
                raise _Invalid("invalid_field", "name: contains a NUL character")
            name = name or None
    elif kind is EventType.alias:
        previous_id = _identifier(get("previousId"), "previousId")
        if previous_id is None:
            raise _Invalid("missing_previous_id", "previousId: an alias call needs one")
    elif kind is EventType.group:
        group_id = _identifier(get("groupId"), "groupId")
        if group_id is None:
            raise _Invalid("missing_group_id", "groupId: a group call needs one")

    for key in _OBJECT_FIELDS:
        value = get(key)
        if value is not None and not isinstance(value, dict):
            raise _Invalid("invalid_field", f"{key}: expected an object, got {_json_type(value)}")

    client_timestamp = _timestamp(get("timestamp"), "timestamp")
    original_field = get("originalTimestamp")
    original = (
        client_timestamp
        if original_field is None
        else _timestamp(original_field, "originalTimestamp")
    )
    sent_field = get("sentAt")
    sent_at = default_sent_at if sent_field is None else _timestamp(sent_field, "sentAt")
    if original is not None and sent_at is not None:
        timestamp = _corrected(received_at, sent_at, original)
    else:
        timestamp = original if original is not None else received_at

    if message_id is None:
        message_id = _generated_message_id(message)

    return Event(
        message_id=message_id,
        type=kind,
        timestamp=timestamp,
        received_at=received_at,
        event=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        original_timestamp=original,
        sent_at=sent_at,
        properties=get("properties") or {},
        traits=get("traits") or {},
        context=get("context") or {},
        previous_id=previous_id,
        group_id=group_id,
        future=timestamp > future_after,
        raw=raw,
    )


def _call_type(value: Any, call: EventType | None) -> EventType:
    if value is None:
        if call is None:
            raise _Invalid("missing_type", "type: a batch message needs one")
        return call
    if call is not None:
        if value != call.value:
            raise _Invalid(
                "type_mismatch",
                f"type: {_preview(value)} does not match the /v1/{call.value} endpoint",
            )
        return call
    kind = _TYPES.get(value) if isinstance(value, str) else None
    if kind is None:
        raise _Invalid(
            "unknown_type",
            f"type: {_preview(value)} is not one of {', '.join(_TYPES)}",
        )
    return kind


def _identifier(value: Any, key: str) -> str | None:
    """A Segment id: string or number (as its decimal text); None or "" is absent."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 1000:  # str() would refuse; far beyond the limit anyway
            raise _Invalid("invalid_field", f"{key}: longer than {MAX_ID_CHARS} characters")
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    else:
        raise _Invalid(
            "invalid_field", f"{key}: expected a string or number, got {_json_type(value)}"
        )
    _check_text(text, key, MAX_ID_CHARS)
    return text


def _event_name(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Invalid("missing_event_name", "event: a track call needs an event name")
    if not isinstance(value, str):
        raise _Invalid("invalid_field", f"event: expected a string, got {_json_type(value)}")
    _check_text(value, "event", MAX_EVENT_NAME_CHARS)
    return value


def _check_text(text: str, key: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise _Invalid(
            "invalid_field", f"{key}: {len(text)} characters; at most {max_chars} are accepted"
        )
    if "\x00" in text:
        raise _Invalid("invalid_field", f"{key}: contains a NUL character")


def _timestamp(value: Any, key: str) -> datetime | None:
    """An ISO-8601 string as naive UTC (naive input is UTC); None is absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(
            "invalid_timestamp", f"{key}: expected an ISO-8601 string, got {_json_type(value)}"
        )
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise _Invalid(
            "invalid_timestamp", f"{key}: not an ISO-8601 date-time: {_preview(value)}"
        ) from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise _Invalid(
            "invalid_timestamp",
            f"{key}: year {parsed.year} is outside {MIN_YEAR}..{MAX_YEAR}",
        )
    return parsed


def _corrected(received_at: datetime, sent_at: datetime, original: datetime) -> datetime:
    """``received_at - (sent_at - original)``: the client's clock skew taken out."""
    try:
        timestamp = received_at - (sent_at - original)
    except OverflowError:
        timestamp = None
    if timestamp is None or not MIN_YEAR <= timestamp.year <= MAX_YEAR:
        raise _Invalid(
            "invalid_timestamp",
            "timestamp: corrected for clock skew (receivedAt - (sentAt - timestamp)) it falls "
            f"outside the years {MIN_YEAR}..{MAX_YEAR}",
        )
    return timestamp


def _generated_message_id(message: dict[str, Any]) -> str:
    """``seg-`` + sha256 of the message's canonical JSON, without sentAt and messageId.

    ``sentAt`` is left out because clients stamp it anew on every retry.
    """
    content = {k: v for k, v in message.items() if k not in _UNHASHED}
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return "seg-" + hashlib.sha256(canonical).hexdigest()


# --- helpers ---------------------------------------------------------------------------


def _loads(body: bytes) -> Any:
    if body[:3] == _BOM:
        body = body[3:]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RequestRejected(400, "invalid_json", f"the body is not valid JSON: {e}") from None


def _inherit(item: dict[str, Any], context: dict[str, Any] | None, sent_at: Any) -> dict[str, Any]:
    """The item with the batch's context merged in (item keys win) and its sentAt if none."""
    merged = dict(item)
    if sent_at is not None and merged.get("sentAt") is None:
        merged["sentAt"] = sent_at
    if context:
        own = merged.get("context")
        if own is None:
            merged["context"] = context
        elif isinstance(own, dict):
            merged["context"] = {**context, **own}
    return merged


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _readable_message_id(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    value = message.get("messageId")
    if isinstance(value, str) and value and len(value) <= MAX_ID_CHARS and "\x00" not in value:
        return value
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _preview(value: Any) -> str:
    text = repr(value)
    if len(text) > _PREVIEW_CHARS:
        text = text[: _PREVIEW_CHARS - 3] + "..."
    return text
