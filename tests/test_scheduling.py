"""scheduling.py: cron and interval arithmetic, time zones and DST, catch-up after downtime.

Every test passes its own fixed "now": nothing sleeps and nothing reads the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durablectl.errors import InvalidSchedule
from durablectl.scheduling import (
    CronRecurrence,
    DueTicks,
    IntervalRecurrence,
    Recurrence,
    due_ticks,
    local_timezone_name,
    make_recurrence,
    next_cron_tick,
    next_interval_tick,
    next_runs,
    prev_cron_tick,
    validate_cron,
    validate_interval,
    validate_policy,
    validate_timezone,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc, arg-type]


def walls(ticks: list[datetime], zone: ZoneInfo) -> list[str]:
    """Ticks as local wall-clock times with their offset: '03-31 03:00+0200'."""
    return [t.astimezone(zone).strftime("%m-%d %H:%M:%S%z") for t in ticks]


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("expression", [
    "* * * * *", "0 3 * * *", "*/15 9-17 * * mon-fri", "0 0 1 jan,jul *", "0 12 * * MON",
    "5,35 */2 1-15 * sun", "0 0 L * *", "0 9 * * mon#1", "0 0 15W * *", "0 0 ? * 7",
    "30 0 12 * * *", "*/10 * * * * *", "@daily", "@hourly", "0 0 29 2 *",
])
def test_valid_expressions_are_accepted(expression: str) -> None:
    assert validate_cron(expression) == expression


def test_whitespace_is_normalised_and_aliases_lowercased() -> None:
    assert validate_cron("  0\t3  * *   * ") == "0 3 * * *"
    assert validate_cron("@Daily") == "@daily"


@pytest.mark.parametrize(("expression", "after", "expected"), [
    # names and ranges: Saturday 2030-01-05 -> Monday 09:00
    ("0 9 * * mon-fri", utc(2030, 1, 5, 12), [utc(2030, 1, 7, 9), utc(2030, 1, 8, 9)]),
    ("0 0 1 jan,jul *", utc(2030, 1, 1), [utc(2030, 7, 1), utc(2031, 1, 1)]),
    ("*/20 8-9 * * *", utc(2030, 1, 1), [utc(2030, 1, 1, 8), utc(2030, 1, 1, 8, 20),
                                         utc(2030, 1, 1, 8, 40), utc(2030, 1, 1, 9),
                                         utc(2030, 1, 1, 9, 20), utc(2030, 1, 1, 9, 40),
                                         utc(2030, 1, 2, 8)]),
    ("15 10 * feb sun", utc(2030, 1, 1), [utc(2030, 2, 3, 10, 15), utc(2030, 2, 10, 10, 15)]),
    ("0 0 L * *", utc(2030, 1, 1), [utc(2030, 1, 31), utc(2030, 2, 28)]),
    ("0 9 * * mon#1", utc(2030, 1, 1), [utc(2030, 1, 7, 9), utc(2030, 2, 4, 9)]),
    # day-of-month and day-of-week both restricted: either one (Vixie cron)
    ("0 0 13 * fri", utc(2030, 1, 1), [utc(2030, 1, 4), utc(2030, 1, 11), utc(2030, 1, 13)]),
    ("@weekly", utc(2030, 1, 1), [utc(2030, 1, 6), utc(2030, 1, 13)]),
    # six fields: the seconds come first
    ("30 0 12 * * *", utc(2030, 1, 1), [utc(2030, 1, 1, 12, 0, 30), utc(2030, 1, 2, 12, 0, 30)]),
    ("*/10 * * * * *", utc(2030, 1, 1, 0, 0, 5),
     [utc(2030, 1, 1, 0, 0, 10), utc(2030, 1, 1, 0, 0, 20), utc(2030, 1, 1, 0, 0, 30)]),
])
def test_expressions_fire_where_expected(expression: str, after: datetime,
                                         expected: list[datetime]) -> None:
    assert next_runs(expression, timezone="UTC", after=after, count=len(expected)) == expected


@pytest.mark.parametrize(("expression", "reason"), [
    ("", "empty"),
    ("* * * *", "4 fields"),
    ("0 0 * * * * 2030", "7 fields"),
    ("61 * * * *", "out of range"),
    ("* 24 * * *", "out of range"),
    ("*/0 * * * *", "step"),
    ("0 0 * * funday", "not acceptable"),
    ("0 0 * foo *", "not acceptable"),
    ("0 0 31 2 *", "never fires"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6,9,11 *", "never fires"),
    ("H * * * *", "hashed or random"),
    ("0 R * * *", "hashed or random"),
    ("@reboot", "unknown alias"),
    ("0 2 * * * 30", "seconds first"),  # croniter's trailing seconds: refused, with a hint
])
def test_invalid_expressions_raise_invalid_schedule(expression: str, reason: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        validate_cron(expression)
    assert reason in caught.value.message
    if expression:
        assert repr(" ".join(expression.split())) in caught.value.message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("value", [5, None, ["0", "3", "*", "*", "*"]])
def test_cron_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidSchedule, match="a cron expression is a string"):
        validate_cron(value)  # type: ignore[arg-type]


def test_every_entry_point_validates_the_expression() -> None:
    with pytest.raises(InvalidSchedule):
        next_cron_tick("61 * * * *", "UTC", utc(2030, 1, 1))
    with pytest.raises(InvalidSchedule):
        next_runs("0 0 31 2 *", timezone="UTC", after=utc(2030, 1, 1))
    with pytest.raises(InvalidSchedule):
        CronRecurrence("nope", "UTC")


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Europe/Paris", "America/New_York",
                                  "Asia/Kolkata", "Australia/Lord_Howe"])
def test_known_timezones_are_accepted(name: str) -> None:
    assert validate_timezone(name) == name
    assert validate_timezone(f" {name} ") == name


@pytest.mark.parametrize("name", ["Mars/Olympus", "utc", "", "Europe", "localtime", "posixrules",
                                  "../etc/passwd", "/etc/localtime", "right/UTC", "+02:00"])
def test_unknown_timezones_raise_invalid_schedule(name: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        validate_timezone(name)
    assert repr(name) in caught.value.message
    with pytest.raises(InvalidSchedule):
        next_cron_tick("0 3 * * *", name, utc(2030, 1, 1))


def test_no_timezone_means_the_machines_zone() -> None:
    assert validate_timezone(None) == local_timezone_name()
    ZoneInfo(validate_timezone(None))


def test_local_zone_comes_from_tz_first(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    assert local_timezone_name(environ={"TZ": ":Europe/Paris"}, localtime=missing,
                               timezone_file=missing) == "Europe/Paris"
    assert local_timezone_name(environ={"TZ": "/usr/share/zoneinfo/America/New_York"},
                               localtime=missing, timezone_file=missing) == "America/New_York"


def test_local_zone_from_the_localtime_link(tmp_path: Path) -> None:
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/posix/Asia/Tokyo")
    missing = str(tmp_path / "missing")
    # a TZ that names no zone is passed over
    assert local_timezone_name(environ={"TZ": "Nowhere/Land"}, localtime=str(link),
                               timezone_file=missing) == "Asia/Tokyo"


def test_local_zone_from_etc_timezone_then_utc(tmp_path: Path) -> None:
    copied = tmp_path / "localtime"
    copied.write_bytes(b"TZif")  # a copied file, not a link: its name is unknown
    timezone_file = tmp_path / "timezone"
    timezone_file.write_text("Europe/Berlin\n")
    assert local_timezone_name(environ={}, localtime=str(copied),
                               timezone_file=str(timezone_file)) == "Europe/Berlin"
    assert local_timezone_name(environ={}, localtime=str(copied),
                               timezone_file=str(tmp_path / "missing")) == "UTC"


def test_policies() -> None:
    assert validate_policy("one", "allow") == ("one", "allow")
    assert validate_policy(None, None) == (None, None)
    for catch_up in ("one", "all", "none"):
        for overlap in ("allow", "skip", "queue"):
            validate_policy(catch_up, overlap)
    with pytest.raises(InvalidSchedule, match=r"catch_up.*'some'.*one, all, none"):
        validate_policy("some", "allow")
    with pytest.raises(InvalidSchedule, match=r"overlap.*'block'.*allow, skip, queue"):
        validate_policy("one", "block")


def test_intervals() -> None:
    assert validate_interval(timedelta(minutes=15)) == 900.0
    assert validate_interval(0.25) == 0.25
    assert validate_interval(60) == 60.0
    for bad in (0, -1, float("nan"), float("inf"), True, "60", timedelta(0), 1e-9, 1e12):
        with pytest.raises(InvalidSchedule):
            validate_interval(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- time zones, DST


def test_utc_schedules_give_aware_utc_datetimes() -> None:
    ticks = next_runs("0 3 * * *", timezone="UTC", after=utc(2030, 1, 1, 12), count=2)
    assert ticks == [utc(2030, 1, 2, 3), utc(2030, 1, 3, 3)]
    assert all(t.tzinfo is UTC for t in ticks)


def test_a_zone_shifts_the_wall_clock() -> None:
    # 03:00 in Paris is 02:00 UTC in winter and 01:00 UTC in summer
    assert next_cron_tick("0 3 * * *", "Europe/Paris", utc(2030, 1, 1)) == utc(2030, 1, 1, 2)
    assert next_cron_tick("0 3 * * *", "Europe/Paris", utc(2030, 7, 1)) == utc(2030, 7, 1, 1)
    # an aware `after` in any zone means the same instant
    after = datetime(2030, 1, 1, 3, 30, tzinfo=PARIS)
    assert next_cron_tick("0 3 * * *", "Europe/Paris", after) == utc(2030, 1, 2, 2)


def test_paris_spring_forward_fires_a_missing_time_once_after_the_gap() -> None:
    # 2030-03-31: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist
    ticks = next_runs("30 2 * * *", timezone="Europe/Paris", after=utc(2030, 3, 30, 12), count=3)
    assert walls(ticks, PARIS) == ["03-31 03:00:00+0200", "04-01 02:30:00+0200",
                                   "04-02 02:30:00+0200"]
    assert ticks[0] == utc(2030, 3, 31, 1)


def test_paris_spring_forward_every_15_minutes_keeps_real_time() -> None:
    ticks = next_runs("*/15 * * * *", timezone="Europe/Paris", after=utc(2030, 3, 31, 0, 30),
                      count=4)
    # the gap's 02:00..02:45 are one fire at 03:00 CEST, 15 real minutes after 01:45 CET
    assert walls(ticks, PARIS) == ["03-31 01:45:00+0100", "03-31 03:00:00+0200",
                                   "03-31 03:15:00+0200", "03-31 03:30:00+0200"]
    assert {b - a for a, b in pairwise(ticks)} == {timedelta(minutes=15)}


def test_spring_forward_gap_rule_holds_for_wildcard_hours_too() -> None:
    # SPEC §3: a time in the gap fires once at the first instant after the gap, whatever the
    # expression (Vixie cron would skip 02:30 for this wildcard-hour job)
    ticks = next_runs("30 * * * *", timezone="Europe/Paris", after=utc(2030, 3, 31, 0), count=3)
    assert walls(ticks, PARIS) == ["03-31 01:30:00+0100", "03-31 03:00:00+0200",
                                   "03-31 03:30:00+0200"]


def test_spring_forward_with_a_seconds_field() -> None:
    ticks = next_runs("15 30 2 * * *", timezone="Europe/Paris", after=utc(2030, 3, 30, 12),
                      count=2)
    assert walls(ticks, PARIS) == ["03-31 03:00:00+0200", "04-01 02:30:15+0200"]


def test_paris_fall_back_fires_a_fixed_time_once_at_its_first_occurrence() -> None:
    # 2030-10-27: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice
    ticks = next_runs("30 2 * * *", timezone="Europe/Paris", after=utc(2030, 10, 26, 12), count=3)
    assert walls(ticks, PARIS) == ["10-27 02:30:00+0200", "10-28 02:30:00+0100",
                                   "10-29 02:30:00+0100"]
    # croniter alone fires it a second time at 02:30 CET (01:30 UTC): not us
    assert next_cron_tick("30 2 * * *", "Europe/Paris", ticks[0]) == utc(2030, 10, 28, 1, 30)


def test_paris_fall_back_every_15_minutes_fires_through_the_repeated_hour() -> None:
    first_pass_2am = utc(2030, 10, 27, 0)  # 02:00 CEST
    second_pass_3am = utc(2030, 10, 27, 2)  # 03:00 CET, two real hours later
    ticks = next_runs("*/15 * * * *", timezone="Europe/Paris",
                      after=first_pass_2am - timedelta(seconds=1), count=12)
    in_repeated_hour = [t for t in ticks if first_pass_2am <= t < second_pass_3am]
    assert len(in_repeated_hour) == 8
    assert walls(in_repeated_hour, PARIS) == [
        "10-27 02:00:00+0200", "10-27 02:15:00+0200", "10-27 02:30:00+0200",
        "10-27 02:45:00+0200", "10-27 02:00:00+0100", "10-27 02:15:00+0100",
        "10-27 02:30:00+0100", "10-27 02:45:00+0100"]
    assert {b - a for a, b in pairwise(ticks)} == {timedelta(minutes=15)}


def test_paris_fall_back_hourly_follows_real_time() -> None:
    ticks = next_runs("0 * * * *", timezone="Europe/Paris", after=utc(2030, 10, 26, 22, 30),
                      count=4)
    assert walls(ticks, PARIS) == ["10-27 01:00:00+0200", "10-27 02:00:00+0200",
                                   "10-27 02:00:00+0100", "10-27 03:00:00+0100"]
    assert {b - a for a, b in pairwise(ticks)} == {timedelta(hours=1)}


def test_after_inside_the_repeated_hour() -> None:
    first_pass = datetime(2030, 10, 27, 2, 50, tzinfo=PARIS)  # fold=0: 02:50 CEST
    second_pass = datetime(2030, 10, 27, 2, 10, fold=1, tzinfo=PARIS)  # 02:10 CET
    assert first_pass.astimezone(UTC) == utc(2030, 10, 27, 0, 50)
    assert second_pass.astimezone(UTC) == utc(2030, 10, 27, 1, 10)
    # a wildcard job goes on into the second pass, which replays earlier wall times
    assert next_cron_tick("*/15 * * * *", "Europe/Paris", first_pass) == utc(2030, 10, 27, 1)
    assert next_cron_tick("*/15 * * * *", "Europe/Paris", second_pass) == \
        utc(2030, 10, 27, 1, 15)
    # a fixed job never fires in the second pass
    assert next_cron_tick("45 2 * * *", "Europe/Paris", first_pass) == utc(2030, 10, 28, 1, 45)
    assert next_cron_tick("30 2 * * *", "Europe/Paris", second_pass) == utc(2030, 10, 28, 1, 30)
    # seconds: ten seconds before the end of the first pass, the next tick opens the second
    assert next_cron_tick("*/20 * * * * *", "Europe/Paris", utc(2030, 10, 27, 0, 59, 50)) == \
        utc(2030, 10, 27, 1)


def test_new_york_spring_forward_and_fall_back() -> None:
    # 2030-03-10: 02:00 EST -> 03:00 EDT
    spring = next_runs("30 2 * * *", timezone="America/New_York", after=utc(2030, 3, 9, 12),
                       count=2)
    assert walls(spring, NEW_YORK) == ["03-10 03:00:00-0400", "03-11 02:30:00-0400"]
    # 2030-11-03: 02:00 EDT -> 01:00 EST; 01:30 happens twice and fires once, the first time
    fall = next_runs("30 1 * * *", timezone="America/New_York", after=utc(2030, 11, 2, 12),
                     count=2)
    assert walls(fall, NEW_YORK) == ["11-03 01:30:00-0400", "11-04 01:30:00-0500"]
    half_hourly = next_runs("*/30 * * * *", timezone="America/New_York",
                            after=utc(2030, 11, 3, 4, 59), count=5)
    assert walls(half_hourly, NEW_YORK) == [
        "11-03 01:00:00-0400", "11-03 01:30:00-0400", "11-03 01:00:00-0500",
        "11-03 01:30:00-0500", "11-03 02:00:00-0500"]


def test_prev_cron_tick_mirrors_next() -> None:
    assert prev_cron_tick("30 2 * * *", "Europe/Paris", utc(2030, 10, 28)) == \
        utc(2030, 10, 27, 0, 30)  # the first 02:30, not the second
    assert prev_cron_tick("*/15 * * * *", "Europe/Paris", utc(2030, 10, 27, 1, 10)) == \
        utc(2030, 10, 27, 1)  # 02:00 CET
    assert prev_cron_tick("30 2 * * *", "Europe/Paris", utc(2030, 4, 1)) == utc(2030, 3, 31, 1)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_cron_tick("0 3 * * *", "UTC", datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_interval_tick(datetime(2030, 1, 1), 60, utc(2030, 1, 1))


# -------------------------------------------------------------------------------- intervals


def test_interval_ticks_are_fixed_rate_from_the_anchor() -> None:
    anchor = utc(2030, 1, 1, 10)
    assert next_interval_tick(anchor, 900, utc(2030, 1, 1, 10, 7)) == utc(2030, 1, 1, 10, 15)
    assert next_interval_tick(anchor, 900, utc(2030, 1, 1, 10, 15)) == utc(2030, 1, 1, 10, 30)
    # the anchor itself is not a tick; before it, the first tick is one interval after it
    assert next_interval_tick(anchor, 900, anchor) == utc(2030, 1, 1, 10, 15)
    assert next_interval_tick(anchor, 900, utc(2029, 1, 1)) == utc(2030, 1, 1, 10, 15)
    # a late worker does not shift the grid
    assert next_interval_tick(anchor, 900, utc(2030, 1, 1, 13, 14, 59)) == utc(2030, 1, 1, 13, 15)


def test_interval_arithmetic_does_not_drift() -> None:
    anchor = utc(2030, 1, 1)
    after = anchor + timedelta(seconds=99_999.95)
    assert next_interval_tick(anchor, 0.1, after) == anchor + timedelta(seconds=100_000)
    # a third of a second is 333 333 µs: a year on, ticks are still whole multiples of it
    year = anchor + timedelta(days=365)
    tick = next_interval_tick(anchor, 1 / 3, year)
    assert (tick - anchor) % timedelta(microseconds=333_333) == timedelta(0)
    assert year < tick <= year + timedelta(microseconds=333_333)


def test_next_runs_for_intervals() -> None:
    start = utc(2030, 1, 1, 12)
    assert next_runs(interval=timedelta(minutes=10), after=start, count=3) == [
        utc(2030, 1, 1, 12, 10), utc(2030, 1, 1, 12, 20), utc(2030, 1, 1, 12, 30)]
    assert next_runs(interval=600, after=start, anchor=utc(2030, 1, 1, 11, 55), count=2) == [
        utc(2030, 1, 1, 12, 5), utc(2030, 1, 1, 12, 15)]
    assert next_runs(interval=600, now=start, count=1) == [utc(2030, 1, 1, 12, 10)]


def test_next_runs_arguments() -> None:
    with pytest.raises(TypeError, match="after= or now="):
        next_runs("0 3 * * *", timezone="UTC")
    with pytest.raises(InvalidSchedule, match="exactly one"):
        next_runs(after=utc(2030, 1, 1))
    with pytest.raises(InvalidSchedule, match="exactly one"):
        next_runs("0 3 * * *", 60, after=utc(2030, 1, 1))
    with pytest.raises(InvalidSchedule):
        next_runs(interval=0, after=utc(2030, 1, 1))
    with pytest.raises(ValueError):
        next_runs("0 3 * * *", timezone="UTC", after=utc(2030, 1, 1), count=-1)
    assert next_runs("0 3 * * *", timezone="UTC", after=utc(2030, 1, 1), count=0) == []
    # `after` wins over `now`
    assert next_runs("0 3 * * *", timezone="UTC", after=utc(2030, 1, 1), now=utc(2031, 1, 1),
                     count=1) == [utc(2030, 1, 1, 3)]


def test_make_recurrence() -> None:
    cron = make_recurrence("0 3 * * *", timezone="Europe/Paris")
    assert isinstance(cron, CronRecurrence) and cron.timezone == "Europe/Paris"
    interval = make_recurrence(interval=60, anchor=utc(2030, 1, 1))
    assert interval == IntervalRecurrence(utc(2030, 1, 1), 60.0)
    with pytest.raises(TypeError, match="anchor"):
        make_recurrence(interval=60)
    with pytest.raises(InvalidSchedule):
        make_recurrence("0 3 * * *", timezone="Mars/Olympus")


# --------------------------------------------------------------------------------- catch-up

QUARTER = IntervalRecurrence(utc(2030, 1, 1, 9, 45), 900)  # ticks at 10:00, 10:15, ...


def test_nothing_is_due_before_the_due_time() -> None:
    result = due_ticks(utc(2030, 1, 1, 10), utc(2030, 1, 1, 9, 59, 59), QUARTER)
    assert result == DueTicks(run=(), missed=None, next_due=utc(2030, 1, 1, 10))


def test_a_tick_on_time_runs_and_the_next_is_armed() -> None:
    result = due_ticks(utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 0, 2), QUARTER)
    assert result == DueTicks(run=(utc(2030, 1, 1, 10),), missed=None,
                              next_due=utc(2030, 1, 1, 10, 15), late=False)


@pytest.mark.parametrize("catch_up", ["one", "all", "none"])
def test_misfire_grace_boundary(catch_up: str) -> None:
    due = utc(2030, 1, 1, 10)
    at_the_limit = due_ticks(due, due + timedelta(seconds=60), QUARTER, catch_up=catch_up)
    assert at_the_limit.run == (due,) and at_the_limit.missed is None
    assert not at_the_limit.late
    just_past = due_ticks(due, due + timedelta(seconds=60, microseconds=1), QUARTER,
                          catch_up=catch_up)
    assert just_past.late
    assert just_past.next_due == utc(2030, 1, 1, 10, 15)
    if catch_up == "none":
        assert just_past.run == ()
        assert just_past.missed is not None
        assert (just_past.missed.count, just_past.missed.first, just_past.missed.last) == \
            (1, due, due)
    else:
        assert just_past.run == (due,) and just_past.missed is None
    zero_grace = due_ticks(due, due, QUARTER, catch_up=catch_up, misfire_grace_seconds=0)
    assert zero_grace.run == (due,) and not zero_grace.late


def test_downtime_catch_up_one_runs_once_for_all_missed_ticks() -> None:
    result = due_ticks(utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 50), QUARTER, catch_up="one")
    assert result.run == (utc(2030, 1, 1, 10, 45),)
    assert result.missed is not None
    assert (result.missed.count, result.missed.first, result.missed.last, result.missed.exact) \
        == (3, utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 30), True)
    assert result.next_due == utc(2030, 1, 1, 11)
    assert result.late


def test_downtime_catch_up_all_runs_each_missed_tick_oldest_first() -> None:
    result = due_ticks(utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 50), QUARTER, catch_up="all")
    assert result.run == (utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 15), utc(2030, 1, 1, 10, 30),
                          utc(2030, 1, 1, 10, 45))
    assert result.missed is None
    assert result.next_due == utc(2030, 1, 1, 11)
    bounded = due_ticks(utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 50), QUARTER, catch_up="all",
                        max_catch_up=2)
    assert bounded.run == (utc(2030, 1, 1, 10, 30), utc(2030, 1, 1, 10, 45))
    assert bounded.missed is not None
    assert (bounded.missed.count, bounded.missed.first, bounded.missed.last) == \
        (2, utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 15))


def test_downtime_catch_up_none_runs_no_missed_tick() -> None:
    result = due_ticks(utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 50), QUARTER, catch_up="none")
    assert result.run == ()
    assert result.missed is not None
    assert (result.missed.count, result.missed.first, result.missed.last) == \
        (4, utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 45))
    assert result.next_due == utc(2030, 1, 1, 11)
    # the newest tick is itself within the grace: it was not missed (§7), so it runs
    on_time = due_ticks(utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 45, 30), QUARTER,
                        catch_up="none")
    assert on_time.run == (utc(2030, 1, 1, 10, 45),)
    assert on_time.missed is not None and on_time.missed.count == 3


def test_a_tick_exactly_at_now_is_due() -> None:
    result = due_ticks(utc(2030, 1, 1, 10), utc(2030, 1, 1, 10, 30), QUARTER, catch_up="all")
    assert result.run[-1] == utc(2030, 1, 1, 10, 30)
    assert result.next_due == utc(2030, 1, 1, 10, 45)


def test_one_time_schedules_run_once_however_late() -> None:
    due = utc(2030, 1, 1, 10)
    for catch_up in ("one", "all", "none"):
        late = due_ticks(due, utc(2031, 6, 1), None, catch_up=catch_up)
        assert late == DueTicks(run=(due,), missed=None, next_due=None, late=True)
    assert due_ticks(due, due + timedelta(seconds=5), None) == \
        DueTicks(run=(due,), missed=None, next_due=None, late=False)
    assert due_ticks(due, due - timedelta(seconds=5), None).run == ()


class Counting:
    """A recurrence that counts how often it is asked, to prove the work is bounded."""

    def __init__(self, inner: Recurrence) -> None:
        self.inner = inner
        self.calls = 0

    def next_after(self, after: datetime) -> datetime:
        self.calls += 1
        return self.inner.next_after(after)

    def prev_before(self, before: datetime) -> datetime | None:
        self.calls += 1
        return self.inner.prev_before(before)

    def count_between(self, low: datetime, high: datetime) -> int | None:
        self.calls += 1
        return self.inner.count_between(low, high)


def test_a_year_down_with_a_one_second_interval_is_cheap() -> None:
    anchor = utc(2030, 1, 1)
    every_second = Counting(IntervalRecurrence(anchor, 1))
    year = 365 * 86400
    now = anchor + timedelta(seconds=year, microseconds=500_000)
    result = due_ticks(anchor + timedelta(seconds=1), now, every_second, catch_up="all",
                       max_catch_up=100)
    assert result.run == tuple(anchor + timedelta(seconds=s) for s in range(year - 99, year + 1))
    assert result.missed is not None
    assert result.missed.count == year - 100 and result.missed.exact
    assert result.missed.first == anchor + timedelta(seconds=1)
    assert result.missed.last == anchor + timedelta(seconds=year - 100)
    assert result.next_due == anchor + timedelta(seconds=year + 1)
    assert every_second.calls <= 2 * 100 + 10
    one = due_ticks(anchor + timedelta(seconds=1), now, every_second, catch_up="one")
    assert one.run == (anchor + timedelta(seconds=year),)
    assert one.missed is not None and one.missed.count == year - 1


def test_a_year_down_with_a_per_second_cron_is_cheap() -> None:
    anchor = utc(2030, 1, 1)
    every_second = Counting(CronRecurrence("* * * * * *", "Europe/Paris"))
    year = 365 * 86400
    now = anchor + timedelta(seconds=year, microseconds=500_000)
    result = due_ticks(anchor + timedelta(seconds=1), now, every_second, catch_up="all",
                       max_catch_up=100)
    assert result.run == tuple(anchor + timedelta(seconds=s) for s in range(year - 99, year + 1))
    assert result.missed is not None
    # cron ticks between the two walks are not counted: the count is a lower bound
    assert not result.missed.exact
    assert 100 < result.missed.count <= year - 100
    assert result.missed.first == anchor + timedelta(seconds=1)
    assert result.missed.last == anchor + timedelta(seconds=year - 100)
    assert result.next_due == anchor + timedelta(seconds=year + 1)
    assert every_second.calls <= 2 * 100 + 10


def test_catch_up_through_the_repeated_hour_runs_every_real_tick() -> None:
    quarter = CronRecurrence("*/15 * * * *", "Europe/Paris")
    result = due_ticks(utc(2030, 10, 26, 23, 45), utc(2030, 10, 27, 2, 5), quarter,
                       catch_up="all")
    assert walls(list(result.run), PARIS) == [
        "10-27 01:45:00+0200", "10-27 02:00:00+0200", "10-27 02:15:00+0200",
        "10-27 02:30:00+0200", "10-27 02:45:00+0200", "10-27 02:00:00+0100",
        "10-27 02:15:00+0100", "10-27 02:30:00+0100", "10-27 02:45:00+0100",
        "10-27 03:00:00+0100"]
    assert result.next_due == utc(2030, 10, 27, 2, 15)


def test_due_ticks_arguments() -> None:
    with pytest.raises(InvalidSchedule):
        due_ticks(utc(2030, 1, 1), utc(2030, 1, 2), QUARTER, catch_up="some")
    with pytest.raises(ValueError):
        due_ticks(utc(2030, 1, 1), utc(2030, 1, 2), QUARTER, max_catch_up=0)
    with pytest.raises(ValueError):
        due_ticks(utc(2030, 1, 1), utc(2030, 1, 2), QUARTER, misfire_grace_seconds=-1)


# ------------------------------------------------------------------------ property tests

ZONES_AND_YEARS = [("UTC", 2030), ("Europe/Paris", 2030), ("America/New_York", 2030),
                   ("Australia/Lord_Howe", 2030), ("America/St_Johns", 2030),
                   ("Pacific/Chatham", 2030), ("Pacific/Apia", 2011), ("Asia/Kolkata", 2030)]


@cache
def transitions(zone_name: str, year: int) -> tuple[datetime, ...]:
    """Every UTC-offset change in a year (instants), or mid-year when there is none."""
    zone = ZoneInfo(zone_name)
    found: list[datetime] = []
    moment = utc(year, 1, 1)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        later = moment + timedelta(hours=1)
        if later.astimezone(zone).utcoffset() != offset:
            low, high = moment, later
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                if mid.astimezone(zone).utcoffset() == offset:
                    low = mid
                else:
                    high = mid
            found.append(high)
            offset = later.astimezone(zone).utcoffset()
        moment = later
    return tuple(found) or (utc(year, 6, 15),)


@st.composite
def zone_and_instant(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant within a few hours of one of its transitions."""
    zone_name, year = draw(st.sampled_from(ZONES_AND_YEARS))
    near = draw(st.sampled_from(transitions(zone_name, year)))
    seconds = draw(st.integers(-6 * 3600, 6 * 3600) | st.integers(-2 * 3600, 2 * 3600))
    micros = draw(st.sampled_from([0, 0, 1, 500_000, 999_999]))
    return zone_name, near + timedelta(seconds=seconds, microseconds=micros)


MINUTES = ["*", "*/15", "*/7", "0", "30", "59", "5,35", "10-20/5"]
HOURS = ["*", "*/3", "0", "1", "2", "3", "1-3", "0,12", "23"]
WEEKDAYS = ["*", "*", "0", "1-5", "sat,sun"]
expressions = st.builds(lambda m, h, d: f"{m} {h} * * {d}", st.sampled_from(MINUTES),
                        st.sampled_from(HOURS), st.sampled_from(WEEKDAYS))


def oracle_next(expression: str, zone_name: str, after: datetime) -> datetime:
    """SPEC §3 by brute force: every wall-clock minute, mapped to instants by definition."""
    zone = ZoneInfo(zone_name)
    expanded, _nth = croniter.expand(expression)

    def values(field: Sequence[int | str], low: int, high: int) -> set[int]:
        return set(range(low, high + 1)) if field == ["*"] else {int(v) % 7 if high == 6
                                                                  else int(v) for v in field}

    minutes, hours = values(expanded[0], 0, 59), values(expanded[1], 0, 23)
    weekdays = values(expanded[4], 0, 6)
    minute_field, hour_field = expression.split()[:2]
    fixed = not (minute_field.startswith("*") or hour_field.startswith("*"))

    def exists(wall: datetime) -> list[datetime]:
        found = set()
        for fold in (0, 1):
            instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if instant.astimezone(zone).replace(tzinfo=None) == wall:
                found.add(instant)
        return sorted(found)

    wall = (after.astimezone(zone).replace(tzinfo=None, fold=0) - timedelta(hours=4)).replace(
        second=0, microsecond=0)
    best: datetime | None = None
    gap_end: tuple[datetime, datetime] | None = None  # (wall after the gap, its instant)
    while best is None or wall - timedelta(hours=15) <= best.replace(tzinfo=None):
        wall += timedelta(minutes=1)
        if not (wall.minute in minutes and wall.hour in hours
                and wall.isoweekday() % 7 in weekdays):
            continue
        instants = exists(wall)
        if not instants:  # in a gap: the first instant after it
            if gap_end is None or gap_end[0] <= wall:
                probe = wall
                while not exists(probe):
                    probe += timedelta(minutes=1)
                gap_end = (probe, exists(probe)[0])
            instants = [gap_end[1]]
        elif len(instants) == 2 and fixed:
            instants = instants[:1]
        for instant in instants:
            if instant > after and (best is None or instant < best):
                best = instant
    assert best is not None
    return best


@PROPERTY
@given(expression=expressions, where=zone_and_instant())
def test_next_cron_tick_matches_the_brute_force_rules(expression: str,
                                                      where: tuple[str, datetime]) -> None:
    zone_name, after = where
    tick = next_cron_tick(expression, zone_name, after)
    assert tick > after and tick.tzinfo is UTC
    assert tick == oracle_next(expression, zone_name, after)


@PROPERTY
@given(expression=expressions, where=zone_and_instant())
def test_prev_and_next_agree(expression: str, where: tuple[str, datetime]) -> None:
    zone_name, after = where
    tick = next_cron_tick(expression, zone_name, after)
    previous = prev_cron_tick(expression, zone_name, tick)
    assert previous is not None and previous <= after
    assert next_cron_tick(expression, zone_name, previous) == tick
    # a tick is either a matching local time or the first instant after a gap
    local = tick.astimezone(ZoneInfo(zone_name))
    after_gap = (tick - timedelta(seconds=1)).astimezone(ZoneInfo(zone_name)).utcoffset() \
        != local.utcoffset()
    assert croniter.match(expression, local.replace(tzinfo=None)) or after_gap


@PROPERTY
@given(anchor_offset=st.integers(-10**6, 10**6), micros=st.integers(1, 10**10),
       after_offset=st.integers(-10**12, 10**12))
def test_interval_ticks_are_whole_intervals_after_the_anchor(anchor_offset: int, micros: int,
                                                             after_offset: int) -> None:
    anchor = utc(2030, 1, 1) + timedelta(seconds=anchor_offset)
    after = anchor + timedelta(microseconds=after_offset)
    step = timedelta(microseconds=micros)
    tick = next_interval_tick(anchor, micros / 1_000_000, after)
    assert tick > after and tick > anchor
    assert (tick - anchor) % step == timedelta(0)
    assert tick - step <= max(after, anchor)


def brute_due(recurrence: Recurrence, next_due: datetime, now: datetime, catch_up: str,
              grace: timedelta, max_catch_up: int) -> tuple[list[datetime], list[datetime]]:
    """The catch-up rules on the full list of due ticks: (run, missed)."""
    due = [next_due]
    while (tick := recurrence.next_after(due[-1])) <= now:
        due.append(tick)
    if len(due) == 1 and now - due[0] <= grace:
        return due, []
    if catch_up == "all":
        return due[-max_catch_up:], due[:-max_catch_up]
    if catch_up == "one" or now - due[-1] <= grace:
        return due[-1:], due[:-1]
    return [], due


def check_against_brute_force(recurrence: Recurrence, next_due: datetime, now: datetime,
                              catch_up: str, grace_s: int, max_catch_up: int) -> None:
    result = due_ticks(next_due, now, recurrence, catch_up=catch_up,
                       misfire_grace_seconds=grace_s, max_catch_up=max_catch_up)
    run, missed = brute_due(recurrence, next_due, now, catch_up, timedelta(seconds=grace_s),
                            max_catch_up)
    assert list(result.run) == run
    assert result.next_due == recurrence.next_after(now) and result.next_due > now
    if not missed:
        assert result.missed is None
        return
    assert result.missed is not None
    assert (result.missed.first, result.missed.last) == (missed[0], missed[-1])
    if result.missed.exact:
        assert result.missed.count == len(missed)
    else:
        assert len(run) < result.missed.count < len(missed)


policies = st.sampled_from(["one", "all", "none"])


@PROPERTY
@given(interval=st.integers(1, 3600), first=st.integers(1, 20), down=st.integers(0, 40_000),
       catch_up=policies, grace=st.integers(0, 120), max_catch_up=st.integers(1, 5))
def test_interval_catch_up_matches_brute_force(interval: int, first: int, down: int,
                                               catch_up: str, grace: int,
                                               max_catch_up: int) -> None:
    anchor = utc(2030, 1, 1)
    recurrence = IntervalRecurrence(anchor, interval)
    next_due = anchor + timedelta(seconds=interval * first)
    check_against_brute_force(recurrence, next_due, next_due + timedelta(seconds=down),
                              catch_up, grace, max_catch_up)


@PROPERTY
@given(expression=st.sampled_from(["*/5 * * * *", "*/15 * * * *", "0 * * * *", "30 2 * * *",
                                   "*/20 * * * * *", "0 */2 * * sat,sun"]),
       where=zone_and_instant(), down=st.integers(0, 4 * 3600), catch_up=policies,
       grace=st.integers(0, 120), max_catch_up=st.integers(1, 5))
def test_cron_catch_up_matches_brute_force(expression: str, where: tuple[str, datetime],
                                           down: int, catch_up: str, grace: int,
                                           max_catch_up: int) -> None:
    zone_name, start = where
    recurrence = CronRecurrence(expression, zone_name)
    next_due = recurrence.next_after(start)
    check_against_brute_force(recurrence, next_due, next_due + timedelta(seconds=down),
                              catch_up, grace, max_catch_up)


def test_both_recurrences_satisfy_the_protocol() -> None:
    recurrences: list[Recurrence] = [CronRecurrence("0 3 * * *", "UTC"),
                                     IntervalRecurrence(utc(2030, 1, 1), 60)]
    for recurrence in recurrences:
        tick = recurrence.next_after(utc(2030, 1, 2))
        before = recurrence.prev_before(tick)
        assert before is not None and before < tick
        assert recurrence.next_after(before) == tick
    assert IntervalRecurrence(utc(2030, 1, 1), 60).prev_before(utc(2030, 1, 1, 0, 1)) is None
