"""The dream schedule (DREAM_SCHEDULE, 5-field cron) as a Celery crontab, and its next fire time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def cron_schedule(expression: str) -> Any:
    """A celery crontab from 'minute hour day-of-month month day-of-week'."""
    from celery.schedules import crontab

    minute, hour, day_of_month, month, day_of_week = expression.split()
    return crontab(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week
    )


def next_fire_time(expression: str, now: datetime | None = None) -> datetime:
    """When the schedule fires next (UTC)."""
    schedule = cron_schedule(expression)
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(366 * 24 * 60):
        moment += timedelta(minutes=1)
        if (
            moment.minute in schedule.minute
            and moment.hour in schedule.hour
            and moment.day in schedule.day_of_month
            and moment.month in schedule.month_of_year
            and (moment.weekday() + 1) % 7 in schedule.day_of_week
        ):
            return moment
    raise ValueError(f"schedule {expression!r} never fires")


def schedule_slot(now: float) -> int:
    """An id shared by every cycle fired for the same scheduled minute."""
    return int(now // 60)
