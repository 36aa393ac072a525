"""Celery Beat: the schedule, with a Redis lock so a second beat never double-fires."""
