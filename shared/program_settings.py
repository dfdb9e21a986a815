"""The monthly program's settings, versioned: which values govern which month.

Versioned (docs/decisions.md, "Versioned program settings"): the score's four weights, the
minimum of qualifying posts (`min_posts`, the setting `monthly_min_quality_posts`), the monthly
pool and the featured-post bonus. Everything else (the voucher pool and amount, the time zone,
what makes a fact count: characters, near-duplicates, interaction weights and caps) stays a
process setting.

A version is one change: the month it takes effect from, the values it changes, who made it
and why. The settings in force for month M = the environment's, then every version with
`effective_from` ≤ M applied in order (`effective_from`, then the order they were made). The
first version is seeded from the environment at the first start-up ("from the beginning",
`SEED_MONTH`, changed by "environment"); afterwards the environment no longer governs these
values, and a start-up whose environment differs from the version in force logs a warning.

Read on every call: one indexed query of a handful of rows, so a change made by one process is
seen by the next request of every other. What is computed from the rows is memoized (versions
are only ever added, never changed: a row's id and time name its content).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import CHAR, BigInteger, DateTime, Identity, Index, String, Text, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, driver
from shared.errors import Conflict, ValidationFailed
from shared.program_time import MONTH, current_month
from shared.settings import Amount, PostCount, Settings, Weight, check_weights

logger = logging.getLogger(__name__)

# The versioned settings: name in the API (the preview's parameters) → field of Settings.
VERSIONED: dict[str, str] = {
    "weight_posts": "weight_posts",
    "weight_active_days": "weight_active_days",
    "weight_interactions": "weight_interactions",
    "weight_quality": "weight_quality",
    "min_posts": "monthly_min_quality_posts",
    "monthly_pool": "monthly_pool",
    "featured_post_bonus": "featured_post_bonus",
}
WEIGHTS = ("weight_posts", "weight_active_days", "weight_interactions", "weight_quality")
_TYPES: dict[str, TypeAdapter] = {
    **{name: TypeAdapter(Weight) for name in WEIGHTS},
    "min_posts": TypeAdapter(PostCount),
    "monthly_pool": TypeAdapter(Amount),
    "featured_post_bonus": TypeAdapter(Amount),
}
# The text of a decimal value in the API (decimals are strings there): what the types above
# accept, as patterns an OpenAPI document can state.
WEIGHT_TEXT = r"^(?:100(?:\.0{1,6})?|\d{1,2}(?:\.\d{1,6})?)$"  # 0 to 100, 6 places at most
AMOUNT_TEXT = r"^\d{1,12}(?:\.\d{1,2})?$"  # USDT, cents at most
SEED_MONTH = "1900-01"  # the earliest month there is (MONTH): "from the beginning"
SEEDED_BY = "environment"
SEED_REASON = "the environment's values at the first start-up"
VERSIONS_LOCK_KEY = 0x6361_0007  # serialises the seed and the changes


class ProgramSettingsVersion(Base):
    __tablename__ = "program_settings_versions"
    __table_args__ = (Index("ix_program_settings_versions_effective_from", "effective_from", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)  # order made
    effective_from: Mapped[str] = mapped_column(CHAR(7))  # YYYY-MM, program months
    changes: Mapped[dict] = mapped_column(JSONB)  # API name → value (decimals as text)
    changed_by: Mapped[str] = mapped_column(String(128))  # the admin key's name
    reason: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NotAFutureMonth(Conflict):
    error = "not_a_future_month"


class NoWeightLeft(Conflict):
    error = "weights_all_zero"


# --- values ------------------------------------------------------------------------------------


def parse(values: Mapping[str, Any], names: Iterable[str] = VERSIONED) -> dict[str, Any]:
    """Typed values (Decimal, int) from what a client or the database sent; ValidationFailed
    (422, every problem in `details`) for a name not in `names` or a bad value."""
    allowed = set(names)
    parsed: dict[str, Any] = {}
    problems = []
    for name, raw in values.items():
        if name not in allowed:
            shown = name.encode("utf-8", "replace").decode()  # a lone surrogate cannot be sent
            problems.append(
                {"loc": [shown], "msg": f"not a setting that can be changed: {sorted(allowed)}"}
            )
        elif isinstance(raw, bool):  # JSON true is not 1
            problems.append({"loc": [name], "msg": "must be a number"})
        else:
            try:
                parsed[name] = _TYPES[name].validate_python(raw)
            except ValidationError as error:
                problems.append({"loc": [name], "msg": error.errors()[0]["msg"]})
    if problems:
        raise ValidationFailed("invalid settings", details=problems)
    return parsed


def check(values: Mapping[str, Any], month: str) -> None:
    """The rule across values: the weights in force in a month must not all be 0. Each value
    may be fine and the versions around a change still leave no weight: a conflict with the
    recorded versions (409), not a bad value."""
    try:
        check_weights(*(values[name] for name in WEIGHTS))
    except ValueError as error:
        raise NoWeightLeft(f"{error}: so they would be from {month}") from None


def values_of(settings: Settings) -> dict[str, Any]:
    """The versioned values of a settings object, by API name."""
    return {name: getattr(settings, field) for name, field in VERSIONED.items()}


def to_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Decimals as text ("0.25", amounts with 2 places), counts as numbers."""
    shown: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("monthly_pool", "featured_post_bonus"):
            shown[name] = str(value.quantize(Decimal("0.01")))
        elif isinstance(value, Decimal):
            shown[name] = str(value)
        else:
            shown[name] = value
    return shown


def with_values(settings: Settings, values: Mapping[str, Any]) -> Settings:
    """`settings` with these versioned values (already typed by `parse`)."""
    return settings.model_copy(update={VERSIONED[name]: value for name, value in values.items()})


# --- the versions -------------------------------------------------------------------------------


async def versions(session: AsyncSession) -> list[ProgramSettingsVersion]:
    """Every version, in the order they apply: by effective month, then the order made."""
    return list(
        await session.scalars(
            select(ProgramSettingsVersion).order_by(
                ProgramSettingsVersion.effective_from, ProgramSettingsVersion.id
            )
        )
    )


def values_in_force(
    settings: Settings, all_versions: Iterable[ProgramSettingsVersion], month: str
) -> dict[str, Any]:
    values = values_of(settings)
    for version in all_versions:
        if version.effective_from <= month:
            values |= parse(version.changes)
    return values


_VERSIONS_UP_TO = (
    "SELECT id, changed_at, changes FROM program_settings_versions "
    "WHERE effective_from <= $1 ORDER BY effective_from, id"
)
_IN_FORCE_MEMO: dict[tuple, tuple[Settings, Settings]] = {}
_IN_FORCE_MEMO_SIZE = 256


async def settings_in_force(session: AsyncSession, settings: Settings, month: str) -> Settings:
    """The settings that govern `month` (YYYY-MM): the environment's, with the versioned values
    of the versions in force for that month. The same object for the same versions."""
    rows = await (await driver(session)).fetch(_VERSIONS_UP_TO, month)  # on every read
    key = (id(settings), month, tuple((row["id"], row["changed_at"]) for row in rows))
    memo = _IN_FORCE_MEMO.get(key)
    if memo is not None and memo[0] is settings:
        return memo[1]
    values = values_of(settings)
    for row in rows:
        values |= parse(row["changes"])
    in_force = with_values(settings, values)
    if len(_IN_FORCE_MEMO) >= _IN_FORCE_MEMO_SIZE:
        _IN_FORCE_MEMO.clear()
    _IN_FORCE_MEMO[key] = (settings, in_force)
    return in_force


def described(
    settings: Settings, all_versions: list[ProgramSettingsVersion]
) -> list[dict[str, Any]]:
    """Each version as the API shows it: `settings` = every versioned value in force from that
    version on (as long as no later one changes it), `changes` = what it changed."""
    values = values_of(settings)
    shown = []
    for version in all_versions:
        values |= parse(version.changes)
        shown.append(
            {
                "effective_from": version.effective_from,
                "settings": to_json(values),
                "changes": to_json(parse(version.changes)),
                "changed_by": version.changed_by,
                "reason": version.reason,
                "changed_at": version.changed_at.isoformat(),
            }
        )
    return shown


async def _lock(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": VERSIONS_LOCK_KEY})


async def add_version(
    session: AsyncSession,
    settings: Settings,
    *,
    effective_from: str,
    changes: Mapping[str, Any],
    changed_by: str,
    reason: str,
    now: datetime | None = None,
) -> ProgramSettingsVersion:
    """Record a change taking effect from a month after the current one (`now`'s program month):
    a month already running or over keeps its rules (NotAFutureMonth). ValidationFailed for an
    unknown name, a bad value, or weights that would all be 0 in any month it governs."""
    if not MONTH.fullmatch(effective_from):
        raise ValidationFailed(
            "invalid settings", details=[{"loc": ["effective_from"], "msg": "must be YYYY-MM"}]
        )
    parsed = parse(changes)
    if not parsed:
        raise ValidationFailed(
            "invalid settings", details=[{"loc": ["settings"], "msg": "no setting to change"}]
        )
    now = now or datetime.now(settings.timezone)
    running = current_month(settings.timezone, now)
    if effective_from <= running:
        raise NotAFutureMonth(
            f"a change takes effect from a month after the current one ({running}): "
            f"{effective_from} is not"
        )
    await _lock(session)
    version = ProgramSettingsVersion(
        effective_from=effective_from,
        changes=to_json(parsed),
        changed_by=changed_by,
        reason=reason,
        changed_at=now.astimezone(UTC),
    )
    after = [*await versions(session), version]  # the new one applies last within its month
    # Every month it governs starts at its own month or at a later version's.
    for month in sorted({v.effective_from for v in after if v.effective_from >= effective_from}):
        check(values_in_force(settings, after, month), month)
    session.add(version)
    await session.flush()
    return version


async def seed_or_compare(session: AsyncSession, settings: Settings) -> list[str]:
    """At start-up: seed the first version from the environment when there is none; otherwise
    warn about each versioned setting whose environment value differs from the version in force
    for the current month, and return their names."""
    await _lock(session)
    existing = await versions(session)
    if not existing:
        session.add(
            ProgramSettingsVersion(
                effective_from=SEED_MONTH,
                changes=to_json(values_of(settings)),
                changed_by=SEEDED_BY,
                reason=SEED_REASON,
                changed_at=datetime.now(UTC),
            )
        )
        await session.flush()
        return []
    month = current_month(settings.timezone)
    environment = values_of(settings)
    in_force = values_in_force(settings, existing, month)
    differing = [name for name in VERSIONED if environment[name] != in_force[name]]
    if differing:
        listed = "; ".join(
            f"{name} (CREATOR_ACTIVITY_{VERSIONED[name].upper()}): environment "
            f"{environment[name]}, in force {in_force[name]}"
            for name in differing
        )
        logger.warning(
            f"the environment's program settings differ from the version in force for {month}, "
            f"which applies (change it with POST /v1/admin/program-settings): {listed}",
            extra={"settings": differing, "month": month},
        )
    return differing
