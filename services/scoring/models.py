"""Tables owned by scoring."""

from __future__ import annotations

from sqlalchemy import CHAR, BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base


class CreatorMonthActivity(Base):
    """Events counted per creator and program month: the foundation's proof of the pipeline."""

    __tablename__ = "scoring_creator_month_activity"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(CHAR(7), primary_key=True)
    posts: Mapped[int] = mapped_column(BigInteger, default=0)
    interactions: Mapped[int] = mapped_column(BigInteger, default=0)
