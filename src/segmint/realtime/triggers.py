"""Real-time triggers: per-event conditions that enter or exit segments, with timers.

The processor calls :meth:`TriggerSet.on_event` for every event of a person (after
the event is committed, with the profile as it was *before* the event) and
:meth:`TriggerSet.due` regularly; both return :class:`Firing` objects that become
membership changes. Cooldowns and pending absence timers live in a
:class:`TriggerState`, saved to the warehouse inside the processor's transaction.

A trigger's ``when`` is a rule-language condition (:mod:`segmint.segments.rules`)
over these fields:

=================================  =========  ==========================================
field                              type       value
=================================  =========  ==========================================
``event_name``                     string     the event key: a ``track`` call's event
                                              name, else the call type (``page``, ...)
``event_type``                     string     the call type (``track``, ``page``, ...)
``property_<name>``                declared   ``properties.<name>`` of the event, for
                                              each name declared under the trigger's
                                              ``properties`` and these defaults:
                                              ``revenue``, ``total``, ``value``,
                                              ``price``, ``quantity``, ``discount``
                                              (number); ``product_id``, ``sku``,
                                              ``category``, ``currency``, ``order_id``,
                                              ``coupon``, ``name`` (string). A missing
                                              property or a value of another type is
                                              NULL.
``minutes_since_last_event``       number     minutes from the person's previous event
                                              (any key) to this event; NULL for the
                                              first event
``minutes_since_last_<slug>``      number     minutes from the person's previous event
                                              of that key, e.g.
                                              ``minutes_since_last_checkout_started``
``count_<slug>_<N><m|h|d>``        number     events of that key in the window
                                              (t - N, t], this event included, e.g.
                                              ``count_product_viewed_60m``,
                                              ``count_page_1h`` (windows up to 366 days)
``hour_of_day``                    number     hour (0-23) of the event's UTC timestamp
``day_of_week``                    number     weekday of the event's UTC timestamp,
                                              0 = Monday
profile fields                     given      the profile before this event (the fields
                                              passed to :meth:`TriggerSet.compile`)
=================================  =========  ==========================================

``<slug>`` is :func:`segmint.realtime.events.slug` of an event key named in the
trigger set (``on``, ``unless``), a Segment call type, or a key passed to
:meth:`TriggerSet.compile`; keys with the same slug are counted together. The
event and time fields above take precedence over profile fields of the same name.
When the person's latest event so far is later than the current one (the event
arrived late), ``minutes_since_last_*`` is NULL: the true previous event is not
known. As everywhere in the rule language, a NULL condition counts as no.

Examples
--------
>>> from datetime import datetime
>>> from segmint.realtime.events import Event, EventType
>>> from segmint.realtime.trigger_config import TriggerConfig
>>> config = TriggerConfig.model_validate({
...     "name": "cart_abandoned_fast", "on": ["abandoned_cart"],
...     "when": "minutes_since_last_event < 30",
...     "then": {"enter": "At-Risk", "ttl_minutes": 1440}})
>>> triggers = TriggerSet.compile([config], profile_fields={})
>>> class Profile:  # what the processor passes: the profile before the event
...     def field_values(self): return {}
...     def last_event_at(self, key=None): return datetime(2026, 1, 1, 11, 56)
...     def count_between(self, key, start, end): return 0
>>> t = datetime(2026, 1, 1, 12, 0)
>>> event = Event("m1", EventType.track, t, t, event="abandoned_cart", user_id="u1")
>>> [(f.action, f.segment, f.ttl) for f in
...  triggers.on_event(event, "p1", Profile(), TriggerState())]
[('enter', 'At-Risk', datetime.timedelta(days=1))]
"""

from __future__ import annotations

import difflib
import heapq
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import sqlglot.expressions as exp

from segmint.errors import ConfigError, RuleEvaluationError, RuleSyntaxError, UserInputError
from segmint.realtime.events import Event, EventType, event_key, slug
from segmint.realtime.trigger_config import TriggerConfig, check_unique_names
from segmint.segments._rules import guards
from segmint.segments._rules.rule import _parse
from segmint.segments._rules.values import coerce_value
from segmint.segments.rules import FieldType, Rule, parse_rule

if TYPE_CHECKING:
    from segmint.engine import RowWriter, Warehouse

__all__ = [
    "DEFAULT_PROPERTIES",
    "MAX_WINDOW",
    "Firing",
    "ProfileView",
    "Timer",
    "TriggerSet",
    "TriggerState",
]

logger = logging.getLogger(__name__)

#: Segment e-commerce properties every trigger may use as ``property_<name>``.
DEFAULT_PROPERTIES: Mapping[str, FieldType] = {
    **dict.fromkeys(
        ("revenue", "total", "value", "price", "quantity", "discount"), FieldType.NUMBER
    ),
    **dict.fromkeys(
        ("product_id", "sku", "category", "currency", "order_id", "coupon", "name"),
        FieldType.STRING,
    ),
}
#: Longest window a ``count_<slug>_<N><unit>`` helper may use.
MAX_WINDOW = timedelta(days=366)

_ANY_EVENT = "minutes_since_last_event"
_MINUTES_SINCE = re.compile(r"minutes_since_last_(?P<slug>.+)")
_COUNT = re.compile(r"count_(?P<slug>.+)_(?P<n>[0-9]+)(?P<unit>[mhd])")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_PROPERTY_PREFIX = "property_"
#: Errors a rule may raise on a record (overflow, ln(0), unexpected values).
_EVALUATION_ERRORS = (RuleEvaluationError, ArithmeticError, ValueError, TypeError)


class ProfileView(Protocol):
    """The person's profile as triggers read it: before the current event is applied."""

    def field_values(self) -> Mapping[str, Any]:
        """Profile field name -> value."""
        ...

    def last_event_at(self, key: str | None = None) -> datetime | None:
        """Timestamp of the latest event applied so far (of that key; any key if None)."""
        ...

    def count_between(self, key: str, start: datetime, end: datetime) -> int:
        """Events of that key with ``start < timestamp <= end`` among those applied."""
        ...


@dataclass(frozen=True, slots=True)
class Firing:
    """A trigger fired for a person: enter or exit a segment.

    Attributes
    ----------
    trigger
        Name of the trigger.
    person_id
        The person it fired for.
    action
        ``"enter"`` or ``"exit"``.
    segment
        The segment entered or exited.
    ttl
        How long the membership lasts after ``at`` (``None``: until exited).
    at
        When it fired, in event time (naive UTC): the event's timestamp, or the due
        time of an absence timer.
    reason
        Why, in words, e.g. ``"abandoned_cart: minutes_since_last_event = 4.0
        (when: minutes_since_last_event < 30)"``.

    Examples
    --------
    >>> from datetime import datetime
    >>> Firing("t", "p1", "exit", "At-Risk", None, datetime(2026, 1, 1), "order").segment
    'At-Risk'
    """

    trigger: str
    person_id: str
    action: Literal["enter", "exit"]
    segment: str
    ttl: timedelta | None
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Timer:
    """A pending absence condition: fires at ``due_at`` unless cancelled first.

    Examples
    --------
    >>> from datetime import datetime
    >>> Timer("p1", "checkout_abandoned", datetime(2026, 1, 1, 12), datetime(2026, 1, 1, 12, 30),
    ...       "m1").due_at.minute
    30
    """

    person_id: str
    trigger: str
    started_at: datetime
    due_at: datetime
    message_id: str | None


# ====================================================================== state

_FIRES_DDL = (
    "CREATE TABLE IF NOT EXISTS trigger_fires ("
    "person_id VARCHAR NOT NULL, "
    '"trigger" VARCHAR NOT NULL, '
    "last_fired_at TIMESTAMP NOT NULL, "
    'PRIMARY KEY (person_id, "trigger"))'
)
_TIMERS_DDL = (
    "CREATE TABLE IF NOT EXISTS trigger_timers ("
    "person_id VARCHAR NOT NULL, "
    '"trigger" VARCHAR NOT NULL, '
    "started_at TIMESTAMP NOT NULL, "
    "due_at TIMESTAMP NOT NULL, "
    "message_id VARCHAR, "
    'PRIMARY KEY (person_id, "trigger"))'
)

_Key = tuple[str, str]
_KEY_COLUMNS = ("person_id", "trigger")


class TriggerState:
    """Per person and trigger: when it last fired, and its pending absence timer.

    Held in memory by the (single) processor; :meth:`save` writes what changed since
    the last save or :meth:`load` to the tables ``trigger_fires(person_id, trigger,
    last_fired_at)`` and ``trigger_timers(person_id, trigger, started_at, due_at,
    message_id)``.

    Examples
    --------
    >>> from datetime import datetime
    >>> from segmint.engine.warehouse import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> state = TriggerState()
    >>> state.record_fire("p1", "welcome", datetime(2026, 1, 1, 12))
    >>> with wh.transaction():
    ...     state.save(wh)
    >>> TriggerState.load(wh).last_fired("p1", "welcome")
    datetime.datetime(2026, 1, 1, 12, 0)
    """

    def __init__(self) -> None:
        self._fires: dict[_Key, datetime] = {}
        self._timers: dict[_Key, Timer] = {}
        # (due_at, person_id, trigger); entries of cancelled timers are skipped lazily.
        self._heap: list[tuple[datetime, str, str]] = []
        self._changed_fires: set[_Key] = set()
        self._changed_timers: set[_Key] = set()
        # Changed keys that have a table row (noted on their first change since the last
        # save): only these need a DELETE before the new rows go in.
        self._stored_fires: set[_Key] = set()
        self._stored_timers: set[_Key] = set()
        # Trigger names seen, so per-person operations need not scan every row.
        self._names: set[str] = set()
        self._tables_made = False

    # ------------------------------------------------------------------ reading

    def last_fired(self, person_id: str, trigger: str) -> datetime | None:
        """When ``trigger`` last fired for the person (event time), if ever."""
        return self._fires.get((person_id, trigger))

    def timer(self, person_id: str, trigger: str) -> Timer | None:
        """The person's pending timer of ``trigger``, if any."""
        return self._timers.get((person_id, trigger))

    def timers(self) -> list[Timer]:
        """All pending timers, soonest first."""
        return sorted(self._timers.values(), key=lambda t: (t.due_at, t.person_id, t.trigger))

    def next_due(self) -> datetime | None:
        """When the soonest pending timer is due (``None`` when there is none)."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    @property
    def unsaved(self) -> int:
        """Number of rows :meth:`save` would write or delete."""
        return len(self._changed_fires) + len(self._changed_timers)

    # ------------------------------------------------------------------ changes

    def record_fire(self, person_id: str, trigger: str, at: datetime) -> None:
        """Remember that ``trigger`` fired for the person at ``at`` (keeps the latest)."""
        key = (person_id, trigger)
        previous = self._fires.get(key)
        if previous is None or at > previous:
            self._names.add(trigger)
            self._note_stored_fire(key)
            self._fires[key] = at
            self._changed_fires.add(key)

    def start_timer(self, timer: Timer) -> None:
        """Add a pending timer (replacing one of the same person and trigger)."""
        key = (timer.person_id, timer.trigger)
        self._names.add(timer.trigger)
        self._note_stored_timer(key)
        self._timers[key] = timer
        self._changed_timers.add(key)
        heapq.heappush(self._heap, (timer.due_at, timer.person_id, timer.trigger))

    def cancel_timer(self, person_id: str, trigger: str) -> Timer | None:
        """Remove the person's pending timer of ``trigger``; returns it, if there was one."""
        key = (person_id, trigger)
        self._note_stored_timer(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            self._changed_timers.add(key)
        return timer

    # A key's first change since the last save tells whether the table has its row.
    def _note_stored_fire(self, key: _Key) -> None:
        if key in self._fires and key not in self._changed_fires:
            self._stored_fires.add(key)

    def _note_stored_timer(self, key: _Key) -> None:
        if key in self._timers and key not in self._changed_timers:
            self._stored_timers.add(key)

    def pop_due(self, now: datetime) -> list[Timer]:
        """Remove and return the timers due at or before ``now``, soonest first."""
        due: list[Timer] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, person_id, trigger = heapq.heappop(self._heap)
            timer = self.cancel_timer(person_id, trigger)
            if timer is not None:
                due.append(timer)

    def forget(self, person_id: str) -> None:
        """Drop everything held about a person (erasure); :meth:`save` deletes the rows."""
        for trigger in self._names:
            key = (person_id, trigger)
            self._note_stored_fire(key)
            if self._fires.pop(key, None) is not None:
                self._changed_fires.add(key)
            self.cancel_timer(person_id, trigger)

    def merge(self, survivor: str, merged: str) -> None:
        """Move a merged person's fires and timers to the surviving person.

        The later firing time is kept; when both have a timer of the same trigger,
        the one due first is kept.
        """
        if survivor == merged:
            return
        for trigger in self._names:
            fired = self._fires.get((merged, trigger))
            if fired is not None:
                self.record_fire(survivor, trigger, fired)
            timer = self._timers.get((merged, trigger))
            if timer is not None:
                current = self._timers.get((survivor, trigger))
                if current is None or timer.due_at < current.due_at:
                    self.start_timer(replace(timer, person_id=survivor))
        self.forget(merged)

    def _drop_stale(self) -> None:
        while self._heap:
            due_at, person_id, trigger = self._heap[0]
            timer = self._timers.get((person_id, trigger))
            if timer is not None and timer.due_at == due_at:
                return
            heapq.heappop(self._heap)

    # ------------------------------------------------------------------ persistence

    @staticmethod
    def ensure_tables(wh: RowWriter) -> None:
        """Create ``trigger_fires`` and ``trigger_timers`` if they do not exist."""
        wh.execute(_FIRES_DDL)
        wh.execute(_TIMERS_DDL)

    @classmethod
    def load(cls, wh: Warehouse) -> TriggerState:
        """The state saved in the warehouse (empty when the tables do not exist yet)."""
        state = cls()
        if wh.has_table("trigger_fires"):
            for person_id, trigger, last_fired_at in wh.fetchall(
                'SELECT person_id, "trigger", last_fired_at FROM trigger_fires'
            ):
                state._fires[(person_id, trigger)] = last_fired_at
                state._names.add(trigger)
        if wh.has_table("trigger_timers"):
            for person_id, trigger, started_at, due_at, message_id in wh.fetchall(
                'SELECT person_id, "trigger", started_at, due_at, message_id FROM trigger_timers'
            ):
                timer = Timer(person_id, trigger, started_at, due_at, message_id)
                state._timers[(person_id, trigger)] = timer
                state._names.add(trigger)
                state._heap.append((due_at, person_id, trigger))
        heapq.heapify(state._heap)
        logger.debug(
            "loaded trigger state: %d fires, %d timers", len(state._fires), len(state._timers)
        )
        return state

    def save(self, wh: RowWriter) -> None:
        """Write the rows changed since the last save or load.

        Runs inside the caller's transaction and neither begins nor commits one.
        Creates the tables on first use. If a statement fails, the changes stay
        pending and the next save writes them again.
        """
        if not self._changed_fires and not self._changed_timers:
            return
        if not self._tables_made:
            self.ensure_tables(wh)
            self._tables_made = True
        fires = sorted(self._changed_fires)
        timers = sorted(self._changed_timers)
        wh.delete_rows(
            "trigger_fires",
            _KEY_COLUMNS,
            [key for key in fires if key in self._stored_fires],
        )
        wh.insert_rows(
            "trigger_fires",
            [*_KEY_COLUMNS, "last_fired_at"],
            [(*key, self._fires[key]) for key in fires if key in self._fires],
        )
        wh.delete_rows(
            "trigger_timers",
            _KEY_COLUMNS,
            [key for key in timers if key in self._stored_timers],
        )
        wh.insert_rows(
            "trigger_timers",
            [*_KEY_COLUMNS, "started_at", "due_at", "message_id"],
            [
                (t.person_id, t.trigger, t.started_at, t.due_at, t.message_id)
                for t in (self._timers[key] for key in timers if key in self._timers)
            ],
        )
        logger.debug("saved trigger state: %d fires, %d timers changed", len(fires), len(timers))
        self._changed_fires.clear()
        self._changed_timers.clear()
        self._stored_fires.clear()
        self._stored_timers.clear()


# ====================================================================== evaluation


class _Context:
    """One event being evaluated, with the profile read at most once."""

    __slots__ = ("before", "event", "key", "t", "_profile")

    def __init__(self, event: Event, key: str, t: datetime, before: ProfileView) -> None:
        self.event = event
        self.key = key
        self.t = t
        self.before = before
        self._profile: Mapping[str, Any] | None = None

    def profile(self) -> Mapping[str, Any]:
        if self._profile is None:
            self._profile = self.before.field_values()
        return self._profile


_Getter = Callable[[_Context], Any]


def _event_name(ctx: _Context) -> Any:
    return ctx.key


def _event_type(ctx: _Context) -> Any:
    return ctx.event.type.value


def _hour_of_day(ctx: _Context) -> Any:
    return ctx.t.hour


def _day_of_week(ctx: _Context) -> Any:
    return ctx.t.weekday()


def _property(field: str, name: str, field_type: FieldType) -> _Getter:
    def get(ctx: _Context) -> Any:
        properties = ctx.event.properties
        value = properties.get(name) if isinstance(properties, Mapping) else None
        try:
            return coerce_value(field, field_type, value)
        except (RuleEvaluationError, ArithmeticError, ValueError, TypeError):
            return None  # a value of the wrong type reads as NULL

    return get


def _minutes_since(keys: tuple[str, ...] | None) -> _Getter:
    def get(ctx: _Context) -> Any:
        if keys is None:
            latest = ctx.before.last_event_at()
        else:
            seen = [at for at in map(ctx.before.last_event_at, keys) if at is not None]
            latest = max(seen) if seen else None
        if latest is None or latest > ctx.t:
            return None
        return (ctx.t - latest).total_seconds() / 60

    return get


def _count(keys: tuple[str, ...], window: timedelta) -> _Getter:
    def get(ctx: _Context) -> Any:
        start = ctx.t - window
        count = sum(ctx.before.count_between(key, start, ctx.t) for key in keys)
        return count + (1 if ctx.key in keys else 0)

    return get


def _profile_field(name: str) -> _Getter:
    def get(ctx: _Context) -> Any:
        return ctx.profile().get(name)

    return get


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    if moment.utcoffset() is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(tzinfo=None)


def _show(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(round(value, 2))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return repr(value)


def _minutes_text(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:g} min"


@dataclass(frozen=True, slots=True)
class _Trigger:
    """One compiled trigger."""

    name: str
    on: tuple[str, ...]
    when: Rule | None
    getters: tuple[tuple[str, _Getter], ...]
    action: Literal["enter", "exit"]
    segment: str
    ttl: timedelta | None
    cooldown: timedelta | None
    unless: str | None
    within: timedelta | None

    def cooling(self, last_fired: datetime | None, at: datetime) -> bool:
        """Whether firing at ``at`` would fall inside the cooldown after ``last_fired``."""
        if not self.cooldown or last_fired is None:
            return False
        return at - last_fired < self.cooldown

    def firing(self, person_id: str, at: datetime, reason: str) -> Firing:
        return Firing(self.name, person_id, self.action, self.segment, self.ttl, at, reason)


# ====================================================================== compiling


class _Catalogue:
    """The fields a ``when`` may use, built per trigger from the names it mentions."""

    def __init__(self, profile_fields: Mapping[str, FieldType], keys: Iterable[str]) -> None:
        self.profile_fields = profile_fields
        #: Event key -> largest window of the count helpers compiled so far.
        self.windows: dict[str, timedelta] = {}
        self.slugs: dict[str, tuple[str, ...]] = {}
        for key in sorted(set(keys)):
            name = slug(key)
            if name:
                self.slugs[name] = (*self.slugs.get(name, ()), key)

    def fields(
        self, config: TriggerConfig, text: str
    ) -> tuple[dict[str, FieldType], dict[str, _Getter]]:
        """Field types for :func:`parse_rule` and value getters, by field name."""
        types: dict[str, FieldType] = {}
        getters: dict[str, _Getter] = {}

        def add(name: str, field_type: FieldType, getter: _Getter) -> None:
            types[name] = field_type
            getters[name] = getter

        for name, profile_type in self.profile_fields.items():
            add(name, profile_type, _profile_field(name))
        properties = {
            **DEFAULT_PROPERTIES,
            **{k: FieldType(v) for k, v in config.properties.items()},
        }
        for name, field_type in properties.items():
            field = _PROPERTY_PREFIX + name
            add(field, field_type, _property(field, name, field_type))
        add("event_name", FieldType.STRING, _event_name)
        add("event_type", FieldType.STRING, _event_type)
        add("hour_of_day", FieldType.NUMBER, _hour_of_day)
        add("day_of_week", FieldType.NUMBER, _day_of_week)
        for name, keys in self.slugs.items():
            if name != "event":
                add(f"minutes_since_last_{name}", FieldType.NUMBER, _minutes_since(keys))
        add(_ANY_EVENT, FieldType.NUMBER, _minutes_since(None))
        for name in _column_names(text):
            self._helper(name, types, add)
        return types, getters

    def _helper(
        self,
        name: str,
        known: Mapping[str, FieldType],
        add: Callable[[str, FieldType, _Getter], None],
    ) -> None:
        """Add the count helper ``name`` names, or explain why the name is unknown."""
        count = _COUNT.fullmatch(name)
        if count is not None and count["slug"] in self.slugs:
            window = int(count["n"]) * _UNITS[count["unit"]]
            if not timedelta(0) < window <= MAX_WINDOW:
                raise RuleSyntaxError(
                    f"window of {name!r} must be more than 0 and at most {MAX_WINDOW.days} days"
                )
            keys = self.slugs[count["slug"]]
            for key in keys:
                self.windows[key] = max(self.windows.get(key, window), window)
            add(name, FieldType.NUMBER, _count(keys, window))
            return
        if name in known or name in {field.lower() for field in known}:
            return
        since = _MINUTES_SINCE.fullmatch(name)
        unknown, candidates = None, list[str]()
        if count is not None:
            unknown = count["slug"]
            candidates = [f"count_{s}_{count['n']}{count['unit']}" for s in self.slugs]
        elif since is not None:
            unknown = since["slug"]
            candidates = [field for field in known if _MINUTES_SINCE.fullmatch(field)]
        if unknown is not None:
            close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RuleSyntaxError(
                f"{name!r} names an unknown event {unknown!r}{hint} (known events: "
                f"{', '.join(sorted(self.slugs))}; name others in on, unless or event_keys)"
            )
        if name.startswith(_PROPERTY_PREFIX):
            prop = name[len(_PROPERTY_PREFIX) :]
            declared = [field for field in known if field.startswith(_PROPERTY_PREFIX)]
            close = difflib.get_close_matches(name, declared, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RuleSyntaxError(
                f"unknown event property {prop!r} in {name!r}{hint} (declare the type of "
                f"other properties under the trigger's properties, e.g. "
                f"properties: {{{prop}: number}})"
            )


def _column_names(text: str) -> list[str]:
    """Field names a condition mentions (unquoted names lower-cased), checked for size first."""
    guards.check_length(text)
    tree = _parse(text)
    guards.check_tree(tree)
    names: list[str] = []
    for column in tree.find_all(exp.Column):
        identifier = column.this
        if isinstance(identifier, exp.Identifier):
            name = str(identifier.this)
            names.append(name if identifier.quoted else name.lower())
    return names


def _compile_one(config: TriggerConfig, catalogue: _Catalogue) -> _Trigger:
    rule: Rule | None = None
    getters: tuple[tuple[str, _Getter], ...] = ()
    if config.when is not None:
        where = f"triggers[{config.name}].when"
        try:
            types, all_getters = catalogue.fields(config, config.when)
            rule = parse_rule(config.when, types)
        except UserInputError as error:
            at = f", {error.where}" if error.where else ""
            raise RuleSyntaxError(error.message, where=where + at) from error
        getters = tuple((name, all_getters[name]) for name in sorted(rule.fields))
    then = config.then
    return _Trigger(
        name=config.name,
        on=tuple(config.on),
        when=rule,
        getters=getters,
        action="enter" if then.enter is not None else "exit",
        segment=then.segment,
        ttl=timedelta(minutes=then.ttl_minutes) if then.ttl_minutes is not None else None,
        cooldown=(timedelta(minutes=config.cooldown_minutes) if config.cooldown_minutes else None),
        unless=config.unless.event if config.unless is not None else None,
        within=(
            timedelta(minutes=config.unless.within_minutes) if config.unless is not None else None
        ),
    )


class TriggerSet:
    """The project's triggers, compiled: evaluates events and due timers into firings.

    Build one with :meth:`compile`. A trigger set holds no per-person state; that
    is in the :class:`TriggerState` passed to :meth:`on_event` and :meth:`due`.

    Examples
    --------
    >>> from segmint.realtime.trigger_config import TriggerConfig
    >>> config = TriggerConfig.model_validate({
    ...     "name": "busy_browser", "on": ["Product Viewed"],
    ...     "when": "count_product_viewed_1h >= 5", "then": {"enter": "Browsers"}})
    >>> triggers = TriggerSet.compile([config], profile_fields={})
    >>> triggers.windows(), triggers.segments()
    ({'Product Viewed': datetime.timedelta(seconds=3600)}, {'Browsers'})
    """

    def __init__(self, triggers: Sequence[_Trigger]) -> None:
        self._triggers = {trigger.name: trigger for trigger in triggers}
        self._by_on: dict[str, list[_Trigger]] = {}
        self._by_unless: dict[str, list[_Trigger]] = {}
        for trigger in triggers:
            for key in trigger.on:
                self._by_on.setdefault(key, []).append(trigger)
            if trigger.unless is not None:
                self._by_unless.setdefault(trigger.unless, []).append(trigger)
        self._windows: dict[str, timedelta] = {}

    @classmethod
    def compile(
        cls,
        configs: Sequence[TriggerConfig],
        *,
        profile_fields: Mapping[str, FieldType | str],
        event_keys: Iterable[str] = (),
    ) -> TriggerSet:
        """Check and compile triggers from the project file.

        Parameters
        ----------
        configs
            The triggers (``triggers:`` of the project file).
        profile_fields
            Profile fields a ``when`` may use, with their types.
        event_keys
            Further event keys whose slugs the time helpers may name (beyond those in
            ``on``/``unless`` and the Segment call types).

        Raises
        ------
        ConfigError
            If trigger names repeat or a profile field type is unknown.
        RuleSyntaxError
            If a ``when`` is malformed, uses anything not allowed, or names an unknown
            field or event (with close matches suggested); ``where`` is
            ``triggers[<name>].when``.

        Examples
        --------
        >>> from segmint.realtime.trigger_config import TriggerConfig
        >>> config = TriggerConfig.model_validate({
        ...     "name": "t", "on": ["x"], "when": "minutes_since_lst_event < 30",
        ...     "then": {"exit": "S"}})
        >>> TriggerSet.compile([config], profile_fields={})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        segmint.errors.RuleSyntaxError: triggers[t].when, character 1: unknown field \
'minutes_since_lst_event'; did you mean 'minutes_since_last_event'...
        """
        configs = list(configs)
        try:
            check_unique_names(configs)
        except ValueError as error:
            raise ConfigError(str(error), where="triggers") from None
        fields: dict[str, FieldType] = {}
        for name, field_type in profile_fields.items():
            try:
                fields[name] = FieldType(field_type)
            except ValueError:
                allowed = ", ".join(t.value for t in FieldType)
                raise ConfigError(
                    f"unknown type {field_type!r} of profile field {name!r} (allowed: {allowed})"
                ) from None
        keys = {key.value for key in EventType} | set(event_keys)
        for config in configs:
            keys.update(config.on)
            if config.unless is not None:
                keys.add(config.unless.event)
        catalogue = _Catalogue(fields, keys)
        compiled = cls([_compile_one(config, catalogue) for config in configs])
        compiled._windows = dict(catalogue.windows)
        logger.debug("compiled %d triggers", len(configs))
        return compiled

    # ------------------------------------------------------------------ description

    def __len__(self) -> int:
        return len(self._triggers)

    def names(self) -> list[str]:
        """Trigger names, in project-file order."""
        return list(self._triggers)

    def windows(self) -> dict[str, timedelta]:
        """Event key -> how much history the profile must keep for the count helpers."""
        return dict(self._windows)

    def segments(self) -> set[str]:
        """Segments the triggers enter or exit."""
        return {trigger.segment for trigger in self._triggers.values()}

    # ------------------------------------------------------------------ evaluation

    def on_event(
        self, event: Event, person_id: str, before: ProfileView, state: TriggerState
    ) -> list[Firing]:
        """Evaluate one event of a person; returns the triggers that fire now.

        First, pending absence timers of the person that wait for this event's key
        and are still running at its time are cancelled. Then every trigger whose
        ``on`` holds the event's key is checked: its ``when`` (NULL or an evaluation
        error is no), then either an absence timer is started (due at the event
        time plus ``within_minutes``; a running one is kept, not restarted) or the
        trigger fires, unless it fired for the person less than ``cooldown_minutes``
        of event time before.

        Parameters
        ----------
        event
            The event (timestamps naive UTC).
        person_id
            The person the event was resolved to.
        before
            The person's profile before this event was applied.
        state
            Cooldowns and timers; updated in place.

        Returns
        -------
        list of Firing
            In project-file order.

        Examples
        --------
        >>> from datetime import datetime
        >>> from segmint.realtime.events import Event, EventType
        >>> from segmint.realtime.trigger_config import TriggerConfig
        >>> config = TriggerConfig.model_validate({
        ...     "name": "buyer", "on": ["Order Completed"], "then": {"exit": "At-Risk"}})
        >>> t = datetime(2026, 1, 1)
        >>> event = Event("m1", EventType.track, t, t, event="Order Completed", user_id="u")
        >>> [f.action for f in TriggerSet.compile([config], profile_fields={}).on_event(
        ...     event, "p1", None, TriggerState())]  # no condition: the profile is not read
        ['exit']
        """
        key = event_key(event)
        t = _naive_utc(event.timestamp)
        for trigger in self._by_unless.get(key, ()):
            timer = state.timer(person_id, trigger.name)
            if timer is not None and timer.started_at <= t <= timer.due_at:
                state.cancel_timer(person_id, trigger.name)
                logger.debug(
                    "trigger %s: timer of %s cancelled by %s", trigger.name, person_id, key
                )
        firings: list[Firing] = []
        context = _Context(event, key, t, before)
        for trigger in self._by_on.get(key, ()):
            if trigger.unless is None and trigger.cooling(
                state.last_fired(person_id, trigger.name), t
            ):
                continue
            values = self._check(trigger, context, person_id)
            if values is None:
                continue
            if trigger.unless is not None:
                self._start_timer(trigger, event, person_id, t, before, state)
                continue
            if trigger.cooldown:  # the last firing only matters for a cooldown
                state.record_fire(person_id, trigger.name, t)
            firings.append(trigger.firing(person_id, t, self._reason(trigger, key, values)))
        return firings

    def due(self, now: datetime, state: TriggerState) -> list[Firing]:
        """Fire the absence timers due at or before ``now`` and remove them.

        Cooldowns apply as for events, at the due time, which is also the firing's
        ``at``. Timers of triggers no longer in the set are dropped.

        Examples
        --------
        >>> from datetime import datetime
        >>> TriggerSet([]).due(datetime(2026, 1, 1), TriggerState())
        []
        """
        now = _naive_utc(now)
        firings: list[Firing] = []
        for timer in state.pop_due(now):
            trigger = self._triggers.get(timer.trigger)
            if trigger is None or trigger.unless is None or trigger.within is None:
                logger.info("dropping a timer of unknown trigger %r", timer.trigger)
                continue
            if trigger.cooling(state.last_fired(timer.person_id, trigger.name), timer.due_at):
                continue
            if trigger.cooldown:
                state.record_fire(timer.person_id, trigger.name, timer.due_at)
            started = " or ".join(trigger.on)
            reason = (
                f"{started} at {timer.started_at:%Y-%m-%d %H:%M} and no {trigger.unless} "
                f"within {_minutes_text(trigger.within)}"
            )
            firings.append(trigger.firing(timer.person_id, timer.due_at, reason))
        return firings

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check(trigger: _Trigger, context: _Context, person_id: str) -> dict[str, Any] | None:
        """The field values when ``when`` holds (``{}`` without one); ``None`` otherwise."""
        if trigger.when is None:
            return {}
        record = {name: getter(context) for name, getter in trigger.getters}
        try:
            result = trigger.when.evaluate(record)
        except _EVALUATION_ERRORS as error:
            logger.warning(
                "trigger %s: condition %r could not be evaluated for person %s (%s); "
                "treated as no match",
                trigger.name,
                trigger.when.text,
                person_id,
                error,
            )
            return None
        return record if result is True else None

    @staticmethod
    def _start_timer(
        trigger: _Trigger,
        event: Event,
        person_id: str,
        t: datetime,
        before: ProfileView,
        state: TriggerState,
    ) -> None:
        assert trigger.unless is not None and trigger.within is not None
        if state.timer(person_id, trigger.name) is not None:
            return
        due_at = t + trigger.within
        # An event that arrived late may already be followed by the awaited one.
        latest = before.last_event_at(trigger.unless)
        if latest is not None and t <= latest <= due_at:
            return
        state.start_timer(Timer(person_id, trigger.name, t, due_at, event.message_id))

    @staticmethod
    def _reason(trigger: _Trigger, key: str, values: Mapping[str, Any]) -> str:
        if trigger.when is None:
            return key
        shown = ", ".join(f"{name} = {_show(value)}" for name, value in values.items())
        condition = trigger.when.text
        if len(condition) > 200:
            condition = condition[:197] + "..."
        return f"{key}: {shown} (when: {condition})"
