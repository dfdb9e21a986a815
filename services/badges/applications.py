"""Applications to join the program, their review, and what the creator view reads.

Services here only flush: the request owns the transaction. Rules:

- An application is judged at once (services/badges/eligibility.py) with the thresholds of the
  day; the basis and reason codes and those thresholds are stored, and the messages are
  rendered when the application is read, in the reader's language.
- A creator has at most one open application (`pending_review`) and none once certified
  (`approved`): the partial unique index `uq_badges_applications_open` makes that atomic; the
  look-up before the insert only gives the usual case a better message. `ineligible` and
  `rejected` applications are closed: the creator may apply again.
- Only a `pending_review` application is decided, once: the row is locked (SELECT … FOR UPDATE),
  so of two operators deciding at once one wins and the other gets a 409.
- An approval appends `creator.certified` to the event log in the same transaction (the log is
  the outbox); the consumers learn of the certification through the bus.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.badges.eligibility import (
    ApplicationForm,
    Eligibility,
    JoiningThresholds,
    Language,
    PlatformAccount,
    Reason,
    check_eligibility,
)
from services.badges.models import Application, Badge, Reward
from shared.bus import log as event_log
from shared.errors import Conflict, NotFound, causes
from shared.events import INTERNAL_SOURCE, CreatorCertified, IncomingEvent

PENDING_REVIEW = "pending_review"
INELIGIBLE = "ineligible"
APPROVED = "approved"
REJECTED = "rejected"
STATUSES = (PENDING_REVIEW, INELIGIBLE, APPROVED, REJECTED)
OPEN_INDEX = "uq_badges_applications_open"
CERTIFIED = "certified"  # the creator view's status of a creator with an approved application


# --- applying -------------------------------------------------------------------------------


async def submit(
    session: AsyncSession, form: ApplicationForm, thresholds: JoiningThresholds
) -> Application:
    """Judge and store a new application; 409 when the creator has an open one or is
    certified."""
    existing = await _open_application(session, form.creator_id)
    if existing is not None:
        raise _already_open(form.creator_id, existing)

    eligibility = check_eligibility(form, thresholds)
    application = Application(
        id=str(uuid.uuid4()),
        creator_id=form.creator_id,
        display_name=form.display_name,
        form=form.model_dump(mode="json", exclude={"creator_id", "display_name"}),
        status=PENDING_REVIEW if eligibility.eligible else INELIGIBLE,
        eligible=eligibility.eligible,
        basis=list(eligibility.basis),
        reasons=[reason.code for reason in eligibility.reasons],
        thresholds=dataclasses.asdict(thresholds),
    )
    session.add(application)
    try:
        await session.flush()
    except IntegrityError as exc:
        # Another request stored an open application for this creator since the look-up.
        if _violated_constraint(exc) != OPEN_INDEX:
            raise
        raise Conflict(
            f"creator {form.creator_id!r} already has an application pending review or is "
            "already certified",
            details=[{"creator_id": form.creator_id}],
        ) from None
    await session.refresh(application, ["created_at"])
    return application


async def _open_application(session: AsyncSession, creator_id: str) -> Application | None:
    return await session.scalar(
        select(Application).where(
            Application.creator_id == creator_id,
            Application.status.in_((PENDING_REVIEW, APPROVED)),
        )
    )


def _already_open(creator_id: str, existing: Application) -> Conflict:
    if existing.status == APPROVED:
        message = f"creator {creator_id!r} is already certified"
    else:
        message = f"creator {creator_id!r} already has an application pending review"
    return Conflict(
        message,
        details=[
            {"creator_id": creator_id, "application_id": existing.id, "status": existing.status}
        ],
    )


def _violated_constraint(exc: IntegrityError) -> str | None:
    """The name of the constraint or unique index a statement violated (asyncpg tells it)."""
    for current in causes(exc):
        if name := getattr(current, "constraint_name", None):
            return name
    return None


# --- reading --------------------------------------------------------------------------------


async def get(session: AsyncSession, application_id: str) -> Application:
    application = await session.get(Application, application_id)
    if application is None:
        raise NotFound(f"no application {application_id!r}")
    return application


async def list_applications(
    session: AsyncSession,
    *,
    status: str | None,
    creator_id: str | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Application], int]:
    """A page of applications in the order they arrived, and how many match in all."""
    conditions = []
    if status is not None:
        conditions.append(Application.status == status)
    if creator_id is not None:
        conditions.append(Application.creator_id == creator_id)
    total = await session.scalar(select(func.count()).select_from(Application).where(*conditions))
    rows = await session.scalars(
        select(Application)
        .where(*conditions)
        .order_by(Application.created_at, Application.id)
        .limit(limit)
        .offset(offset)
    )
    return rows.all(), total


def eligibility_of(application: Application, language: Language) -> Eligibility:
    """The stored verdict, with its messages rendered in `language`.

    The verdict (eligible, basis, reason codes) is the one stored when the application arrived;
    the messages are those of the rule for the stored form and thresholds. The form is not
    validated again: a later, stricter form must not make an old application unreadable."""
    form = form_of(application)
    stored_form = ApplicationForm.model_construct(
        creator_id=application.creator_id,
        display_name=application.display_name,
        platforms=[PlatformAccount.model_construct(**p) for p in form["platforms"]],
        square_certified=form["square_certified"],
        square_followers=form["square_followers"],
        square_interactions_30d=form["square_interactions_30d"],
    )
    messages = {
        reason.code: reason.message
        for reason in check_eligibility(stored_form, _thresholds(application), language).reasons
    }
    return Eligibility(
        eligible=application.eligible,
        basis=application.basis,
        reasons=[
            Reason(code=code, message=messages.get(code, code)) for code in application.reasons
        ],
    )


def _thresholds(application: Application) -> JoiningThresholds:
    known = {f.name for f in dataclasses.fields(JoiningThresholds)}
    return JoiningThresholds(**{k: v for k, v in application.thresholds.items() if k in known})


# --- deciding -------------------------------------------------------------------------------


async def approve(
    session: AsyncSession,
    application_id: str,
    *,
    certified_at: datetime,
    decided_by: str,
    now: datetime,
) -> Application:
    """Certify the creator: the application becomes `approved` and `creator.certified` is
    appended to the event log, in the caller's transaction. `certified_at` is checked by the
    caller (not in the future)."""
    application = await _pending_for_decision(session, application_id, "approve")
    application.status = APPROVED
    application.certified_at = certified_at
    application.decided_at = now
    application.decided_by = decided_by
    await session.flush()
    await event_log.append(session, [certified_event(application)])
    return application


async def reject(
    session: AsyncSession, application_id: str, *, reason: str, decided_by: str, now: datetime
) -> Application:
    application = await _pending_for_decision(session, application_id, "reject")
    application.status = REJECTED
    application.rejection_reason = reason
    application.decided_at = now
    application.decided_by = decided_by
    await session.flush()
    return application


async def _pending_for_decision(
    session: AsyncSession, application_id: str, decision: str
) -> Application:
    """The application, locked until the transaction ends; 409 unless it awaits review."""
    application = await session.scalar(
        select(Application)
        .where(Application.id == application_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if application is None:
        raise NotFound(f"no application {application_id!r}")
    if application.status != PENDING_REVIEW:
        if application.status == INELIGIBLE:
            message = (
                f"application {application_id!r} is ineligible: it cannot be {decision}d; "
                "the creator may apply again"
            )
        else:
            message = f"application {application_id!r} was already {application.status}"
        raise Conflict(
            message, details=[{"application_id": application_id, "status": application.status}]
        )
    return application


def certified_event(application: Application) -> IncomingEvent:
    """The `creator.certified` event of an approved application. Its id is derived from the
    application, so the same approval can never be logged twice."""
    data = CreatorCertified(
        creator_id=application.creator_id,
        certified_at=application.certified_at,
        application_id=application.id,
        display_name=application.display_name,
    )
    return IncomingEvent(
        id=f"application-{application.id}-approved",
        type="creator.certified",
        time=application.certified_at,
        source=INTERNAL_SOURCE,
        creator_id=application.creator_id,
        data=data.model_dump(mode="json", exclude_none=True),
        attributes={},
    )


# --- the creator view -----------------------------------------------------------------------


@dataclass(frozen=True)
class CreatorRecord:
    """What GET /v1/creators/{id} shows, as stored."""

    application: Application  # the latest (an approved one, when there is one)
    badges: Sequence[Badge]
    rewards: Sequence[Reward]

    @property
    def status(self) -> str:
        status = self.application.status
        return CERTIFIED if status == APPROVED else status


async def creator_record(session: AsyncSession, creator_id: str) -> CreatorRecord:
    """The creator as the program knows them; 404 for a creator who never applied."""
    application = await session.scalar(
        select(Application)
        .where(Application.creator_id == creator_id)
        .order_by(
            case((Application.status == APPROVED, 0), else_=1),
            Application.created_at.desc(),
            Application.id.desc(),
        )
        .limit(1)
    )
    if application is None:
        raise NotFound(f"creator {creator_id!r} has never applied to the program")
    badges = await session.scalars(
        select(Badge).where(Badge.creator_id == creator_id).order_by(Badge.awarded_at, Badge.kind)
    )
    rewards = await session.scalars(
        select(Reward).where(Reward.creator_id == creator_id).order_by(Reward.feed_seq)
    )
    return CreatorRecord(application=application, badges=badges.all(), rewards=rewards.all())


def form_of(application: Application) -> dict[str, Any]:
    """The stored form, with the defaults of fields it may lack."""
    return {
        "platforms": [],
        "square_certified": False,
        "square_followers": None,
        "square_interactions_30d": None,
        **application.form,
    }
