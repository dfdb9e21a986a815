"""The program calendar: months, days and ISO weeks counted in the program time zone."""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from zoneinfo import ZoneInfo

# Years 1900-2999: enough for any program month, and no month whose bounds leave the calendar
# (year 0 or 9999-12 + grace was a 500).
MONTH = re.compile(r"^((?:19|2\d)\d{2})-(0[1-9]|1[0-2])$")


def month_of(moment: datetime, zone: ZoneInfo) -> str:
    """`YYYY-MM` of an aware moment, in the program zone (an event's own time, not arrival)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: times must be zone-aware")
    return moment.astimezone(zone).strftime("%Y-%m")


def add_calendar_month(moment: datetime, zone: ZoneInfo) -> datetime:
    """The same wall-clock time one calendar month later in the program zone, the day clamped
    to the month's end (31 March 00:30 -> 30 April 00:30)."""
    local = moment.astimezone(zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day)


def current_month(zone: ZoneInfo, now: datetime | None = None) -> str:
    """The running program month ("now" is the server's clock in the program zone)."""
    return month_of(now or datetime.now(zone), zone)
