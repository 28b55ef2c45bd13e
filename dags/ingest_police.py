"""Airflow DAG ingest_police: 公安 household register (户籍, deaths, moves out of province), paged from the police REST API.

Pulls one batch into landing/, then standardises and validates it; updates the Asset
lianban://staged/police that the cycle DAG waits on.
"""

from __future__ import annotations

from hub.dagkit import ingestion_dag

dag = ingestion_dag("police", doc_md=__doc__)
