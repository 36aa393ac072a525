"""Celery workers: emotion annotation, dream consolidation, system tasks."""
