"""Airflow's `core.hostname_callable` for two Celery workers on one machine (tests/e2e/test_celery.py):
each task instance records the name of the worker that ran it, LIANBAN_WORKER_NAME."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("LIANBAN_WORKER_NAME") or socket.getfqdn()
