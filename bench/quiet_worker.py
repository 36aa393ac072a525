"""The project's worker app with task events off, for `bench.queue`'s third side only.

Started as `celery -A bench.quiet_worker worker` without -E. (Celery's `disable_events` control
command cannot do this: a worker that started with events on has no group filter to take `task`
out of, so it answers "already disabled" and keeps sending them.)
"""

from __future__ import annotations

from jeffrey_worker.app import app

app.conf.worker_send_task_events = False
app.conf.task_send_sent_event = False

__all__ = ["app"]
