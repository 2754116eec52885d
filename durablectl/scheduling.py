"""Pure next-due arithmetic for schedules: cron in an IANA time zone, fixed-rate intervals,
catch-up after downtime (SPEC §3).

Nothing here reads the clock: every function takes the instant it reasons from (``after``,
``before``, ``now``), so the runner, the CLI's ``schedule preview`` and the tests all get the
same answers. Every datetime that comes out is timezone-aware UTC; naive datetimes are refused.
(``validate_timezone(None)`` reads the machine's zone setting, ``TZ`` or ``/etc/localtime``:
configuration, not the clock.)

Cron expressions
    5 fields ``minute hour day-of-month month day-of-week``, or 6 with the **seconds first**
    (``second minute hour day month weekday``: Quartz, Spring and the JavaScript cron-parser the
    design note came from; croniter's ``second_at_beginning=True``). Names (``mon``, ``jan``),
    ranges, lists, steps, ``L``, ``W``, ``#`` and the ``@hourly``-style aliases work as croniter
    reads them; day-of-month and day-of-week both restricted means either (Vixie cron). Refused:
    croniter's hashed and random fields (``H``, ``R``: a schedule must fire at the same times on
    every machine), a 7th (year) field, and an expression that never fires (``0 0 30 2 *``).

Time zones (the trap)
    croniter only does calendar arithmetic here, on naive wall-clock times; the mapping of a
    wall-clock time to instants is ours, because croniter's own DST handling fires a fixed
    ``30 2 * * *`` twice on a fall-back night. Each wall-clock time ``w`` the expression matches
    stands for these instants:

    * ``w`` exists once: that instant;
    * ``w`` is in a spring-forward gap: the first instant after the gap (03:00 local in Paris).
      Several times in one gap (``*/15`` at 02:00, 02:15, ...) are one fire, at that instant;
    * ``w`` occurs twice (fall back): its first occurrence only, when the minute and hour fields
      are fixed; both occurrences when the minute or the hour field starts with ``*`` (Vixie
      cron's rule: ``*/15 * * * *`` and ``0 * * * *`` keep following real time through the
      repeated hour).

    The schedule's ticks are the set of those instants; ``next_cron_tick`` is the first one
    strictly after ``after``, ``prev_cron_tick`` the last one strictly before ``before``.

Intervals are fixed-rate: ticks at ``anchor + k * interval`` for k >= 1 (the anchor itself, the
schedule's creation, is not a tick), computed in integer microseconds so they never drift.

Catch-up (``due_ticks``): see its docstring. The work is bounded whatever the downtime: interval
ticks are counted arithmetically and only the ticks that will be run are ever listed.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from durablectl.errors import InvalidSchedule

CATCH_UP_POLICIES: Final = ("one", "all", "none")
OVERLAP_POLICIES: Final = ("allow", "skip", "queue")

# Aliases croniter reads, spelled out so the DST rule can look at the minute and hour fields.
CRON_ALIASES: Final[Mapping[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# A longer interval is almost certainly a unit mistake, and would overflow datetime arithmetic.
MAX_INTERVAL_SECONDS: Final = 100 * 366 * 86400.0

_HASHED_FIELD = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.IGNORECASE)
_SIX_FIELD_HINT = " (a 6-field expression puts the seconds first: 'sec min hour day month weekday')"
# croniter starts from here when it checks that an expression fires at all (it looks 50 years on).
_PROBE_START = datetime(2000, 1, 1)
# Zone keys zoneinfo accepts that are not IANA names a schedule could be stored with.
_NOT_ZONE_NAMES: Final = frozenset({"localtime", "posixrules"})
_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)


# --------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Cron:
    """A validated expression: its text, its fields after alias expansion, and its DST rule."""

    text: str
    fields: tuple[str, ...]
    has_seconds: bool
    follows_real_time: bool  # minute or hour field starts with "*" (Vixie cron's rule)


def validate_cron(expression: str) -> str:
    """The expression with its whitespace normalised; ``InvalidSchedule`` naming it otherwise."""
    return _parse_cron(expression).text


def _parse_cron(expression: str) -> _Cron:
    if not isinstance(expression, str):
        raise InvalidSchedule(
            f"a cron expression is a string, not {type(expression).__name__}")
    return _parse_cron_text(expression)


@lru_cache(maxsize=512)
def _parse_cron_text(expression: str) -> _Cron:
    text = " ".join(expression.split())
    if not text:
        raise InvalidSchedule("empty cron expression")
    if text.startswith("@"):
        text = text.lower()
        if text not in CRON_ALIASES:
            raise InvalidSchedule(f"invalid cron expression {text!r}: unknown alias "
                                  f"(known: {', '.join(CRON_ALIASES)})")
        fields = tuple(CRON_ALIASES[text].split())
    else:
        fields = tuple(text.split())
    if len(fields) not in (5, 6):
        raise InvalidSchedule(
            f"invalid cron expression {text!r}: {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 with the seconds first")
    for field in fields:
        if _HASHED_FIELD.fullmatch(field):
            raise InvalidSchedule(
                f"invalid cron expression {text!r}: hashed or random fields ({field!r}) are not "
                "supported; a schedule must fire at the same times on every machine")
    has_seconds = len(fields) == 6
    try:
        probe = croniter(" ".join(fields), _PROBE_START, ret_type=datetime,
                         second_at_beginning=has_seconds)
        probe.get_next(datetime)
    except CroniterBadDateError:
        raise InvalidSchedule(f"cron expression {text!r} never fires") from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        hint = _SIX_FIELD_HINT if has_seconds and croniter.is_valid(" ".join(fields)) else ""
        raise InvalidSchedule(f"invalid cron expression {text!r}: {reason}{hint}") from None
    minute, hour = fields[1:3] if has_seconds else fields[0:2]
    return _Cron(text=text, fields=fields, has_seconds=has_seconds,
                 follows_real_time=minute.startswith("*") or hour.startswith("*"))


def validate_timezone(name: str | None) -> str:
    """An IANA zone name; ``None`` is the machine's zone (``UTC`` when none is found)."""
    if name is None:
        return local_timezone_name()
    if not isinstance(name, str):
        raise InvalidSchedule(f"a timezone is an IANA name, not {type(name).__name__}")
    key = name.strip()
    if _zone_or_none(key) is None:
        raise InvalidSchedule(
            f"unknown timezone {name!r} (use an IANA name such as 'Europe/Paris' or 'UTC')")
    return key


def local_timezone_name(*, environ: Mapping[str, str] | None = None,
                        localtime: str = "/etc/localtime",
                        timezone_file: str = "/etc/timezone") -> str:
    """The machine's IANA zone: ``TZ``, else the ``/etc/localtime`` link target, else
    ``/etc/timezone`` (Debian), else ``UTC``. A ``TZ`` that names no zone is passed over."""
    env = os.environ if environ is None else environ
    tz = env.get("TZ", "").strip().lstrip(":")
    if tz:
        key = _zone_key_from_path(tz) if tz.startswith("/") else tz
        if key and _zone_or_none(key) is not None:
            return key
    try:
        target = os.readlink(localtime)
    except OSError:
        target = ""
    if target:
        key = _zone_key_from_path(os.path.normpath(
            os.path.join(os.path.dirname(localtime), target)))
        if key and _zone_or_none(key) is not None:
            return key
    try:
        with open(timezone_file, encoding="utf-8") as handle:
            key = handle.readline().strip()
    except (OSError, UnicodeDecodeError):
        key = ""
    if key and _zone_or_none(key) is not None:
        return key
    return "UTC"


def _zone_key_from_path(path: str) -> str | None:
    """``/usr/share/zoneinfo/Europe/Paris`` -> ``Europe/Paris`` (``posix/`` dropped)."""
    marker = "zoneinfo/"
    at = path.rfind(marker)
    if at < 0:
        return None
    key = path[at + len(marker):]
    return key.removeprefix("posix/") or None


def _zone_or_none(key: str) -> ZoneInfo | None:
    if not key or key in _NOT_ZONE_NAMES or key.startswith(("right/", "posix/")):
        return None  # right/ zones count leap seconds, which datetime does not
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone(name: str) -> ZoneInfo:
    zone = _zone_or_none(name)
    if zone is None:
        raise InvalidSchedule(f"unknown timezone {name!r}")
    return zone


def validate_policy(catch_up: str | None, overlap: str | None) -> tuple[str | None, str | None]:
    """Both policies unchanged when known (``None``: the service's default)."""
    if catch_up is not None and catch_up not in CATCH_UP_POLICIES:
        raise InvalidSchedule(
            f"unknown catch_up policy {catch_up!r} (accepted: {', '.join(CATCH_UP_POLICIES)})")
    if overlap is not None and overlap not in OVERLAP_POLICIES:
        raise InvalidSchedule(
            f"unknown overlap policy {overlap!r} (accepted: {', '.join(OVERLAP_POLICIES)})")
    return catch_up, overlap


def validate_interval(interval: float | timedelta) -> float:
    """Seconds (a number or a timedelta), positive, at least a microsecond, at most a century."""
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
    elif isinstance(interval, int | float) and not isinstance(interval, bool):
        seconds = float(interval)
    else:
        raise InvalidSchedule(
            f"an interval is seconds or a timedelta, not {type(interval).__name__}")
    if not math.isfinite(seconds) or _micros(seconds) < 1:
        raise InvalidSchedule(f"invalid interval {interval!r}: it must be a positive duration")
    if seconds > MAX_INTERVAL_SECONDS:
        raise InvalidSchedule(f"invalid interval {interval!r}: longer than a century")
    return seconds


# ------------------------------------------------------------------------------ cron and DST


class _WallClock:
    """croniter on naive wall-clock times: calendar arithmetic only, the DST mapping is ours.

    One croniter per expression, reused under a lock (building one costs ~150 µs)."""

    def __init__(self, cron: _Cron) -> None:
        self._iter = croniter(" ".join(cron.fields), _PROBE_START, ret_type=datetime,
                              second_at_beginning=cron.has_seconds)
        self._lock = threading.Lock()

    def after(self, wall: datetime) -> datetime:
        """The first matching wall-clock time strictly after ``wall``."""
        with self._lock:
            return self._iter.get_next(datetime, start_time=wall)

    def before(self, wall: datetime) -> datetime:
        """The last matching wall-clock time strictly before ``wall``."""
        with self._lock:
            return self._iter.get_prev(datetime, start_time=wall)

    def at_or_after(self, wall: datetime) -> datetime:
        # Ticks are whole seconds: from the second before the ceiling of ``wall`` croniter's
        # step (+1 s, or +1 min then truncation) lands on the first tick >= ``wall``.
        ceiling = wall.replace(microsecond=0) + (_SECOND if wall.microsecond else timedelta())
        return self.after(ceiling - _SECOND)


def _instants(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime | None]:
    """The UTC instants a naive wall-clock time stands for: (first, second or None).

    In a gap the first is the first instant after the gap; ``second`` is set only for a time
    that occurs twice. PEP 495: ``fold=0`` maps with the offset before a transition."""
    early = wall.replace(tzinfo=zone, fold=0)
    late = wall.replace(tzinfo=zone, fold=1)
    early_offset, late_offset = early.utcoffset(), late.utcoffset()
    assert early_offset is not None and late_offset is not None
    if early_offset == late_offset:
        return early.astimezone(UTC), None
    if early_offset > late_offset:  # clocks went back: the time happens twice
        return early.astimezone(UTC), late.astimezone(UTC)
    # clocks jumped forward: the time does not exist; with the offset after the jump it lands
    # before the jump, with the offset before it lands after: the jump lies in between
    return _transition(zone, late.astimezone(UTC), early.astimezone(UTC)), None


def _offset_at(zone: ZoneInfo, timestamp: int) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, zone).utcoffset()


def _transition(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The first instant in (low, high] with ``high``'s UTC offset (``low`` has another one).

    tzdata transitions fall on whole seconds, so a bisection over seconds finds it exactly."""
    lo, hi = math.floor(low.timestamp()), math.ceil(high.timestamp())
    target = _offset_at(zone, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(zone, mid) == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _next_instant(cron: _Cron, clock: _WallClock, zone: ZoneInfo, after: datetime) -> datetime:
    local = after.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    best: datetime | None = None
    if cron.follows_real_time and local.fold == 0:
        first, second = _instants(wall, zone)
        if second is not None:
            # ``after`` is in the first pass of a repeated hour: the second pass replays wall
            # times earlier than ``after``'s, so its first tick may come before the next tick
            # of the first pass. Find the repeated range and its first tick.
            length = second - first
            jump = _transition(zone, after, after + length)
            fold_start = jump.astimezone(zone).replace(tzinfo=None, fold=0)
            candidate = clock.at_or_after(fold_start)
            if candidate < fold_start + length:
                best = candidate.replace(tzinfo=zone, fold=1).astimezone(UTC)
    while True:
        wall = clock.after(wall)
        first, second = _instants(wall, zone)
        if first > after:
            # wall times only go up from here, and the first instant of each with them
            return first if best is None or first < best else best
        if second is not None and cron.follows_real_time and second > after:
            return second  # ``after`` is in the second pass, which this tick follows
        # a repeated wall time whose first occurrence is past and whose second is not a
        # tick (fixed minute and hour) or is past too: go on


def _prev_instant(cron: _Cron, clock: _WallClock, zone: ZoneInfo, before: datetime) -> datetime:
    """The mirror of ``_next_instant``: the last tick strictly before ``before``."""
    local = before.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    best: datetime | None = None
    if local.fold == 1:
        first, second = _instants(wall, zone)
        if second is not None:
            # ``before`` is in the second pass: the first pass of wall times later than
            # ``before``'s came earlier, so its last tick may beat the main walk below.
            length = second - first
            jump = _transition(zone, first, second)
            fold_start = jump.astimezone(zone).replace(tzinfo=None, fold=0)
            candidate = clock.before(fold_start + length)
            if candidate >= fold_start:
                best = candidate.replace(tzinfo=zone, fold=0).astimezone(UTC)
    while True:
        wall = clock.before(wall)
        first, second = _instants(wall, zone)
        if second is not None and cron.follows_real_time and second < before:
            return second if best is None or second > best else best
        if first < before:
            return first if best is None or first > best else best


# -------------------------------------------------------------------------------- recurrences


class Recurrence(Protocol):
    """How a recurring schedule's ticks follow each other (all instants aware UTC)."""

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``."""
        ...

    def prev_before(self, before: datetime) -> datetime | None:
        """The last tick strictly before ``before`` (``None``: there is none)."""
        ...

    def count_between(self, low: datetime, high: datetime) -> int | None:
        """How many ticks lie in (low, high], or ``None`` when that is not cheap to know."""
        ...


class CronRecurrence:
    """The ticks of a cron expression in an IANA zone (see the module docstring for DST)."""

    def __init__(self, expression: str, timezone: str) -> None:
        self._cron = _parse_cron(expression)
        self.expression = self._cron.text
        self.timezone = validate_timezone(timezone)
        self._zone = _zone(self.timezone)
        self._clock = _WallClock(self._cron)

    def __repr__(self) -> str:
        return f"CronRecurrence({self.expression!r}, {self.timezone!r})"

    def next_after(self, after: datetime) -> datetime:
        return _next_instant(self._cron, self._clock, self._zone, _aware(after, "after"))

    def prev_before(self, before: datetime) -> datetime | None:
        try:
            return _prev_instant(self._cron, self._clock, self._zone, _aware(before, "before"))
        except CroniterBadDateError:  # nothing in the 50 years croniter looks back
            return None

    def count_between(self, low: datetime, high: datetime) -> int | None:
        return None


@dataclass(frozen=True)
class IntervalRecurrence:
    """Fixed-rate ticks ``anchor + k * interval_seconds``, k >= 1, in whole microseconds."""

    anchor: datetime
    interval_seconds: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchor", _aware(self.anchor, "anchor"))
        object.__setattr__(self, "interval_seconds", validate_interval(self.interval_seconds))

    @property
    def _step(self) -> int:
        return _micros(self.interval_seconds)

    def _tick(self, k: int) -> datetime:
        return self.anchor + timedelta(microseconds=k * self._step)

    def _last_index(self, moment: datetime) -> int:
        """The largest k with ``anchor + k*step <= moment`` (0 when ``moment`` is earlier)."""
        elapsed = (_aware(moment, "moment") - self.anchor) // _MICROSECOND
        return max(0, elapsed // self._step)

    def next_after(self, after: datetime) -> datetime:
        return self._tick(self._last_index(after) + 1)

    def prev_before(self, before: datetime) -> datetime | None:
        k = self._last_index(_aware(before, "before") - _MICROSECOND)
        return self._tick(k) if k >= 1 else None

    def count_between(self, low: datetime, high: datetime) -> int | None:
        return max(0, self._last_index(high) - self._last_index(low))


def next_cron_tick(expression: str, timezone: str | None, after: datetime) -> datetime:
    """The first tick of ``expression`` in ``timezone`` strictly after ``after`` (aware UTC)."""
    return _cron_recurrence(expression, validate_timezone(timezone)).next_after(after)


def prev_cron_tick(expression: str, timezone: str | None, before: datetime) -> datetime | None:
    """The last tick strictly before ``before`` (``None`` if none in croniter's 50 years)."""
    return _cron_recurrence(expression, validate_timezone(timezone)).prev_before(before)


@lru_cache(maxsize=256)
def _cron_recurrence(expression: str, timezone: str) -> CronRecurrence:
    return CronRecurrence(expression, timezone)


def next_interval_tick(anchor: datetime, interval_seconds: float, after: datetime) -> datetime:
    """Fixed rate: the first ``anchor + k * interval`` (k >= 1) strictly after ``after``."""
    return IntervalRecurrence(anchor, interval_seconds).next_after(after)


def make_recurrence(cron: str | None = None, interval: float | timedelta | None = None, *,
                    timezone: str | None = None, anchor: datetime | None = None) -> Recurrence:
    """The recurrence of a cron or an interval schedule (exactly one of the two).

    ``timezone`` matters to cron only (``None``: the machine's zone) but is checked either way;
    ``anchor`` is required for an interval (the schedule's creation or last interval change)."""
    if (cron is None) == (interval is None):
        raise InvalidSchedule("a recurring schedule needs exactly one of cron= or interval=")
    zone = validate_timezone(timezone)
    if cron is not None:
        return _cron_recurrence(validate_cron(cron), zone)
    assert interval is not None
    if anchor is None:
        raise TypeError("an interval recurrence needs its anchor (creation or last change)")
    return IntervalRecurrence(anchor, validate_interval(interval))


def next_runs(cron: str | None = None, interval: float | timedelta | None = None, *,
              timezone: str | None = None, after: datetime | None = None, count: int = 5,
              anchor: datetime | None = None, now: datetime | None = None) -> list[datetime]:
    """The next ``count`` ticks strictly after ``after`` (default ``now``), aware UTC.

    This module reads no clock: pass ``after`` or ``now`` (the public wrapper passes the clock's
    ``now``). An interval is anchored at ``anchor``, by default ``after``: a schedule created
    then."""
    start = after if after is not None else now
    if start is None:
        raise TypeError("next_runs needs after= or now= (scheduling reads no clock)")
    start = _aware(start, "after")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, not {count!r}")
    recurrence = make_recurrence(cron, interval, timezone=timezone,
                                 anchor=start if anchor is None else anchor)
    ticks: list[datetime] = []
    moment = start
    for _ in range(count):
        moment = recurrence.next_after(moment)
        ticks.append(moment)
    return ticks


# ----------------------------------------------------------------------------------- catch-up


@dataclass(frozen=True)
class Missed:
    """Ticks that get no execution of their own, for one audit record (never one per tick)."""

    count: int  # exact when ``exact``; otherwise a lower bound (a long cron downtime)
    first: datetime
    last: datetime
    exact: bool = True


@dataclass(frozen=True)
class DueTicks:
    """What a worker does with a schedule whose due time it has reached."""

    run: tuple[datetime, ...]  # start one execution per tick, oldest first
    missed: Missed | None  # recorded as missed, not run
    next_due: datetime | None  # the next future tick to arm; None: a one-time schedule is done
    late: bool = False  # the catch-up policy applied (a missed tick, or several due at once)


def due_ticks(next_due: datetime, now: datetime, recurrence: Recurrence | None, *,
              catch_up: str = "one", misfire_grace_seconds: float = 60,
              max_catch_up: int = 100) -> DueTicks:
    """Which of a schedule's ticks to run now, which were missed, and the next one to arm.

    ``next_due`` is the tick the schedule was armed for; ``recurrence`` computes the following
    ones (``None``: a one-time schedule, which runs once however late). The ticks now due are
    ``next_due`` and every later tick up to ``now``. A single tick at most
    ``misfire_grace_seconds`` late simply runs. Otherwise the policy applies:

    * ``one``: one run, for the newest tick; the older ones are recorded as missed;
    * ``all``: one run per tick, oldest first, at most the newest ``max_catch_up``; older ones
      are recorded as missed;
    * ``none``: no catch-up. A tick seen more than the grace after its due time was missed
      (§7), so the newest tick still runs when it is itself within the grace; every other due
      tick is recorded as missed.

    Bounded work: at most ``max_catch_up + 1`` ticks are enumerated from each end of the
    downtime; interval ticks are counted arithmetically, cron ticks exactly when both walks
    meet (otherwise ``Missed.count`` is a lower bound)."""
    next_due, now = _aware(next_due, "next_due"), _aware(now, "now")
    validate_policy(catch_up, None)
    if catch_up is None:
        raise InvalidSchedule("catch_up is one of one, all, none")
    if isinstance(max_catch_up, bool) or not isinstance(max_catch_up, int) or max_catch_up < 1:
        raise ValueError(f"max_catch_up must be an integer >= 1, not {max_catch_up!r}")
    if not misfire_grace_seconds >= 0:
        raise ValueError(f"misfire_grace_seconds must be >= 0, not {misfire_grace_seconds!r}")
    grace = timedelta(seconds=misfire_grace_seconds)
    if now < next_due:
        return DueTicks(run=(), missed=None, next_due=next_due)
    if recurrence is None:
        return DueTicks(run=(next_due,), missed=None, next_due=None,
                        late=now - next_due > grace)

    keep = max_catch_up + 1 if catch_up == "all" else 2
    tail, total, exact = _due_span(recurrence, next_due, now, keep)
    following = recurrence.next_after(now)
    newest = tail[-1]
    if total == 1 and now - newest <= grace:
        return DueTicks(run=(newest,), missed=None, next_due=following)

    if catch_up == "all":
        run = tuple(tail[-max_catch_up:])
    elif catch_up == "one" or now - newest <= grace:
        run = (newest,)
    else:
        run = ()
    left = total - len(run)
    missed = None
    if left > 0:
        missed = Missed(count=left, first=next_due, last=tail[-len(run) - 1], exact=exact)
    return DueTicks(run=run, missed=missed, next_due=following, late=True)


def _due_span(recurrence: Recurrence, first: datetime, now: datetime,
              keep: int) -> tuple[list[datetime], int, bool]:
    """The newest ``keep`` ticks due (``first`` and the ticks after it up to ``now``), oldest
    first, how many are due, and whether that count is exact.

    Walks forward from ``first`` for at most ``keep + 1`` ticks; past that it walks back from
    ``now`` instead, so a year of downtime on a one-second schedule costs no more than an
    hour's."""
    head = [first]
    while len(head) <= keep:
        tick = recurrence.next_after(head[-1])
        if tick > now:
            return head[-keep:], len(head), True
        head.append(tick)

    tail: list[datetime] = []
    met = False
    moment = now + _MICROSECOND  # prev_before is strict; ticks exactly at ``now`` are due
    while len(tail) < keep:
        earlier = recurrence.prev_before(moment)
        if earlier is None or earlier <= head[-1]:
            met = True
            break
        tail.append(earlier)
        moment = earlier
    tail.reverse()
    if met:
        combined = head + tail
        return combined[-keep:], len(combined), True
    counted = recurrence.count_between(head[-1], now)
    if counted is not None:
        return tail, len(head) + counted, True
    # ticks between the two walks are uncounted: is there any?
    exact = recurrence.next_after(head[-1]) >= tail[0]
    return tail, len(head) + len(tail), exact


# ------------------------------------------------------------------------------------ helpers


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")
    return value.astimezone(UTC)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)
