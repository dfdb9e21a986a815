"""Tables owned by badges."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base


class CreatorPosts(Base):
    """Each creator's first post and post count: what the new-creator voucher will build on."""

    __tablename__ = "badges_creator_posts"

    creator_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_post_id: Mapped[str] = mapped_column(String(128))
    first_post_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    posts: Mapped[int] = mapped_column(BigInteger)
