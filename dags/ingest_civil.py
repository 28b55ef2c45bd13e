"""Airflow DAG ingest_civil: 民政 assistance roll (低保, 低保边缘, 特困, 孤儿), read from the civil 前置库 table over SQL.

Pulls one batch into landing/, then standardises and validates it; updates the Asset
lianban://staged/civil that the cycle DAG waits on.
"""

from __future__ import annotations

from hub.dagkit import ingestion_dag

dag = ingestion_dag("civil", doc_md=__doc__)
