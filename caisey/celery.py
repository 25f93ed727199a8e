"""The Celery app: broker and beat schedule come from Django settings (CELERY_*)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caisey.settings")

app = Celery("caisey")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
