"""The program calendar: months, days and ISO weeks counted in the program time zone."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_of(moment: datetime, zone: ZoneInfo) -> str:
    """`YYYY-MM` of an aware moment, in the program zone (an event's own time, not arrival)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: times must be zone-aware")
    return moment.astimezone(zone).strftime("%Y-%m")

