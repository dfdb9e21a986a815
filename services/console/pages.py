"""What each page of the operator console shows, read and done through the same functions as the
admin API's routes (called in-process, not over HTTP), so a page and the API never disagree:
approving here is exactly `POST /v1/admin/applications/{id}/approve`, settling here is exactly
`POST /v1/admin/months/{month}/settle`, and so on. Each function runs in the caller's
transaction and only flushes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.badges import applications_api, program_api, rewards
from services.badges.models import Application
from services.badges.schemas import ApplicationPage, ApproveBody, CreatorOut, RejectBody
from services.console import chart
from services.scoring import months, preview, score
from services.scoring import router as scoring_api
from services.scoring.models import Settlement
from shared import ops
from shared.auth import ApiKey
from shared.bus import dead_letters
from shared.language import Language
from shared.program_settings import settings_in_force
from shared.web import Context

REVIEW_PAGE = 50
RANKING_PAGE = 500  # the ranking API's largest page
LATEST_WINNERS = 10


# --- applications ---------------------------------------------------------------------------


async def review_queue(
    session: AsyncSession, key: ApiKey, status: str | None, offset: int, language: Language
) -> ApplicationPage:
    return await applications_api.list_applications(
        _=key,
        session=session,
        response=Response(),
        status=status,
        creator_id=None,
        limit=REVIEW_PAGE,
        offset=offset,
        accept_language=language,
    )


async def approve(
    session: AsyncSession,
    context: Context,
    key: ApiKey,
    application_id: str,
    certified_at: datetime | None,
) -> None:
    body = ApproveBody(certified_at=certified_at.isoformat()) if certified_at else None
    await applications_api.approve_application(
        application_id=application_id,
        key=key,
        context=context,
        session=session,
        response=Response(),
        body=body,
    )


async def reject(session: AsyncSession, key: ApiKey, application_id: str, reason: str) -> None:
    await applications_api.reject_application(
        application_id=application_id,
        body=RejectBody(reason=reason),
        key=key,
        session=session,
        response=Response(),
    )


async def creator(session: AsyncSession, key: ApiKey, creator_id: str) -> CreatorOut:
    return await applications_api.get_creator(creator_id=creator_id, _=key, session=session)


# --- the voucher pool -----------------------------------------------------------------------


@dataclass(frozen=True)
class Winner:
    creator_id: str
    display_name: str | None
    issued_at: datetime
    amount: Decimal | None


async def voucher_pool(
    session: AsyncSession, context: Context, key: ApiKey
) -> tuple[program_api.VoucherPool, list[Winner]]:
    """The pool (cap, issued, remaining) and its latest winners, newest first."""
    pool = await program_api.voucher_pool(_=key, session=session, context=context)
    _, total = await rewards.find(session, kind=rewards.NEW_CREATOR_VOUCHER, limit=1)
    latest, _ = await rewards.find(
        session,
        kind=rewards.NEW_CREATOR_VOUCHER,
        limit=LATEST_WINNERS,
        offset=max(0, total - LATEST_WINNERS),
    )
    names = await display_names(session, [r.creator_id for r in latest])
    winners = [
        Winner(r.creator_id, names.get(r.creator_id), r.issued_at, r.amount)
        for r in reversed(latest)
    ]
    return pool, winners


async def display_names(session: AsyncSession, creator_ids: list[str]) -> dict[str, str | None]:
    """The display names of certified creators, from their approved applications."""
    if not creator_ids:
        return {}
    rows = await session.execute(
        select(Application.creator_id, Application.display_name).where(
            Application.creator_id.in_(creator_ids), Application.status == "approved"
        )
    )
    return dict(rows.all())


# --- the monthly leaderboard ----------------------------------------------------------------


@dataclass(frozen=True)
class Leaderboard:
    ranking: scoring_api.Ranking  # every entry, not one page
    min_posts: int  # qualifying posts a creator needs to share the pool
    settle_from: datetime  # month end + grace
    distribution: chart.Chart  # paid shares once settled, else what settling now would pay
    projected: dict[str, Decimal]  # provisional: each eligible creator's share if settled now


async def leaderboard(
    session: AsyncSession, context: Context, key: ApiKey, month: str
) -> Leaderboard:
    """The month's ranking (live or settled), as GET /v1/rankings/{month} answers it, with the
    pool's distribution."""
    ranking = await _ranking_page(session, context, key, month, 0)
    entries = list(ranking.entries)
    while len(entries) < ranking.total:
        more = (await _ranking_page(session, context, key, month, len(entries))).entries
        if not more:  # the ranking moved on meanwhile (a refresh): what was read is all
            break
        entries += more
    ranking = ranking.model_copy(update={"entries": entries, "limit": len(entries)})

    settled = await session.get(Settlement, month)
    if settled is not None:
        min_posts = int(settled.settings["monthly_min_quality_posts"])
        shares = {e.creator_id: e.payout or Decimal(0) for e in entries}
        projected: dict[str, Decimal] = {}
    else:
        in_force = await settings_in_force(session, context.settings, month)
        min_posts = in_force.monthly_min_quality_posts
        projected = score.split_pool(
            ranking.pool, {e.creator_id: e.score for e in entries if e.eligible}
        )
        shares = projected
    labels = {e.creator_id: e.display_name or e.creator_id for e in entries}
    return Leaderboard(
        ranking=ranking,
        min_posts=min_posts,
        settle_from=months.settle_after(month, context.settings),
        distribution=chart.distribution(
            [(labels[c], amount) for c, amount in shares.items()], ranking.pool
        ),
        projected=projected,
    )


async def _ranking_page(
    session: AsyncSession, context: Context, key: ApiKey, month: str, offset: int
) -> scoring_api.Ranking:
    return await scoring_api.get_ranking(
        month=month,
        _=key,
        session=session,
        context=context,
        limit=RANKING_PAGE,
        offset=offset,
    )


async def creator_month(
    session: AsyncSession,
    context: Context,
    key: ApiKey,
    creator_id: str,
    month: str,
    language: Language,
) -> scoring_api.CreatorMonthOut:
    """The creator's month and why each post that does not qualify does not."""
    return await scoring_api.get_creator_month(
        creator_id=creator_id,
        month=month,
        _=key,
        session=session,
        context=context,
        response=Response(),
        accept_language=language,
    )


async def settle(session: AsyncSession, context: Context, key: ApiKey, month: str) -> None:
    await scoring_api.settle(
        month=month, key=key, session=session, context=context, limit=RANKING_PAGE
    )


def can_settle_now(month: str, context: Context) -> bool:
    return datetime.now(UTC) >= months.settle_after(month, context.settings)


# --- what-if --------------------------------------------------------------------------------

PREVIEW_PARAMETERS = preview.NAMES  # the weights, min_posts, monthly_pool


async def what_if(
    session: AsyncSession, context: Context, month: str, overrides: dict[str, str]
) -> dict[str, Any]:
    """The body of GET /v1/admin/months/{month}/preview for these overrides (ValidationFailed
    for a bad value), with the display names of the creators it lists."""
    result = await preview.preview_month(session, context.settings, month, overrides)
    names = await display_names(session, [c["creator_id"] for c in result["creators"]])
    for row in result["creators"]:
        row["display_name"] = names.get(row["creator_id"])
    return result


# --- consumers and dead letters -------------------------------------------------------------


async def consumers(
    session: AsyncSession, context: Context, key: ApiKey
) -> tuple[ops.Consumers, list[dead_letters.DeadLetter]]:
    """Lag and dead letters per group (GET /v1/admin/consumers), and the parked events."""
    groups = await ops.consumers(context=context, _=key, session=session)
    return groups, await dead_letters.listing(session)


def replayable_groups() -> dict[str, Any]:
    """Each consumer group that can take its parked events back, and how to make its handler.
    The relays' groups (`relay`, `rewards-relay`) are parked for the record only."""
    from services.runtime import CONSUMERS  # the runtime composes this console: import late

    return CONSUMERS


async def replay(
    context: Context, group: str, event_id: str | None, source: str | None
) -> dead_letters.ReplayReport:
    """`creator-activity dead-letters replay --group G [--id ID --source S]`: each parked event
    back through its group's handler, in a transaction of its own."""
    handler = replayable_groups()[group](context.settings)
    return await dead_letters.replay(
        context.sessionmaker, group, handler, event_id=event_id, source=source
    )
