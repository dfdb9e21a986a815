"""Who may join the program (PROGRAM.md, "Who may join"): the rule, as a pure function.

`check_eligibility(form, thresholds, language)` checks the three ways in at once:

1. `verified_elsewhere` – some listed platform says the creator is verified (followers there do
   not matter, 0 is fine);
2. `followers_on_one_platform` – the largest following on a *single* listed platform reaches
   `min_followers_single_platform`; followers are never added across platforms (900 + 900 fails);
3. `square_creator` – `square_certified` and both square figures reach their thresholds. The
   form's square figures are taken as sent (API.md); a figure left out counts as 0.

Decisions:

- **Reasons are listed for every way that fails, also when the application is eligible.** Each
  of the three ways ends up either in `basis` or with at least one reason, so the operator who
  reviews an eligible application sees the whole picture (e.g. a claimed verification that did
  not hold), and the result does not depend on which way happened to succeed. Whether the
  application is eligible is `eligible` (= `basis` is not empty), never "reasons is empty".
- **Every failing condition of a way is listed**: a creator who is not square-certified and has
  too few square followers gets both reasons, so one answer tells them all that is missing.
- Order: basis codes and reasons follow the order of the ways above; within the square way,
  certification, followers, interactions.
- Messages name the numbers (thousands separated: 1,000) in English, or in Simplified Chinese
  when `preferred_language` picks `zh` from the request's Accept-Language.

`ApplicationForm` is the request body of `POST /v1/applications` (pydantic only, no FastAPI);
the router turns its validation errors into a 422 naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from shared.events import MAX_COUNT, storable
from shared.language import Language

if TYPE_CHECKING:
    from shared.settings import Settings

BasisCode = Literal["verified_elsewhere", "followers_on_one_platform", "square_creator"]
ReasonCode = Literal[
    "followers_below_threshold",
    "not_verified_elsewhere",
    "square_not_certified",
    "square_followers_below_threshold",
    "square_interactions_below_threshold",
]

MAX_PLATFORMS = 20


# --- the form -------------------------------------------------------------------------------


CreatorId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(storable)]
DisplayName = Annotated[str, Field(max_length=64), AfterValidator(storable)]
PlatformName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(storable)]
Handle = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(storable)]
# Counts fit a PostgreSQL BIGINT, like the counts of events.
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlatformAccount(_Form):
    """The creator's account on another platform, as the creator states it."""

    platform: PlatformName
    handle: Handle
    followers: Count
    verified: StrictBool


class ApplicationForm(_Form):
    """The body of `POST /v1/applications`."""

    creator_id: CreatorId
    display_name: DisplayName | None = None
    platforms: list[PlatformAccount] = Field(default_factory=list, max_length=MAX_PLATFORMS)
    square_certified: StrictBool = False
    square_followers: Count | None = None
    square_interactions_30d: Count | None = None


# --- the rule -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoiningThresholds:
    """The numbers of "Who may join": PROGRAM.md's defaults, or the service's Settings."""

    min_followers_single_platform: int = 1000
    square_min_followers: int = 500
    square_min_interactions_30d: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> JoiningThresholds:
        return cls(
            min_followers_single_platform=settings.min_followers_single_platform,
            square_min_followers=settings.square_min_followers,
            square_min_interactions_30d=settings.square_min_interactions_30d,
        )


class Reason(BaseModel):
    """Why one condition of one way in does not hold."""

    model_config = ConfigDict(frozen=True)

    code: ReasonCode
    message: str


class Eligibility(BaseModel):
    model_config = ConfigDict(frozen=True)

    eligible: bool
    basis: list[BasisCode]
    reasons: list[Reason]


def check_eligibility(
    form: ApplicationForm, thresholds: JoiningThresholds, language: Language = "en"
) -> Eligibility:
    """Check the three ways in at once; see the module docstring for what is listed."""
    basis: list[BasisCode] = []
    reasons: list[Reason] = []

    def add_reason(code: ReasonCode, template: str | None = None, **numbers: int) -> None:
        text = _MESSAGES[template or code][language]
        text = text.format(**{name: f"{value:,}" for name, value in numbers.items()})
        reasons.append(Reason(code=code, message=text))

    def below(code: ReasonCode, have: int | None, need: int) -> bool:
        """Whether `have` falls short of `need`; if so, the reason is added. None counts as 0."""
        if (have or 0) >= need:
            return False
        if have is None:
            add_reason(code, f"{code}.missing", need=need)
        else:
            add_reason(code, have=have, need=need)
        return True

    if any(account.verified for account in form.platforms):
        basis.append("verified_elsewhere")
    else:
        add_reason("not_verified_elsewhere")

    # The largest single following, never a sum: 900 + 900 on two platforms is 900.
    largest = max((account.followers for account in form.platforms), default=None)
    needed = thresholds.min_followers_single_platform
    if largest is None:  # no platform at all fails this way, whatever the threshold
        add_reason("followers_below_threshold", "followers_below_threshold.missing", need=needed)
    elif not below("followers_below_threshold", largest, needed):
        basis.append("followers_on_one_platform")

    if not form.square_certified:
        add_reason("square_not_certified")
    # Not short-circuited: every missing condition of the square way is reported.
    square_followers_short = below(
        "square_followers_below_threshold", form.square_followers, thresholds.square_min_followers
    )
    square_interactions_short = below(
        "square_interactions_below_threshold",
        form.square_interactions_30d,
        thresholds.square_min_interactions_30d,
    )
    if form.square_certified and not square_followers_short and not square_interactions_short:
        basis.append("square_creator")

    return Eligibility(eligible=bool(basis), basis=basis, reasons=reasons)


_MESSAGES: dict[str, dict[Language, str]] = {
    "not_verified_elsewhere": {
        "en": "No listed platform shows the creator as verified",
        "zh": "所填平台均未显示为已认证创作者",
    },
    "followers_below_threshold": {
        "en": "The largest following on one platform is {have}; at least {need} are needed "
        "(followers on different platforms are not added up)",
        "zh": "单个平台最多 {have} 位粉丝，需要至少 {need} 位（多个平台的粉丝不可叠加）",
    },
    "followers_below_threshold.missing": {
        "en": "No other platform is listed; at least {need} followers on one platform are needed",
        "zh": "未填写其他平台，需要单个平台至少 {need} 位粉丝",
    },
    "square_not_certified": {
        "en": "Not a certified creator on the square",
        "zh": "尚未成为广场认证创作者",
    },
    "square_followers_below_threshold": {
        "en": "Square followers: {have}; at least {need} are needed",
        "zh": "广场粉丝 {have} 位，需要至少 {need} 位",
    },
    "square_followers_below_threshold.missing": {
        "en": "The number of square followers is not given; at least {need} are needed",
        "zh": "未提供广场粉丝数，需要至少 {need} 位",
    },
    "square_interactions_below_threshold": {
        "en": "Interactions received on the square in the last 30 days: {have}; "
        "at least {need} are needed",
        "zh": "近 30 天在广场获得 {have} 次互动，需要至少 {need} 次",
    },
    "square_interactions_below_threshold.missing": {
        "en": "The number of interactions received on the square in the last 30 days is not "
        "given; at least {need} are needed",
        "zh": "未提供近 30 天在广场获得的互动数，需要至少 {need} 次",
    },
}
