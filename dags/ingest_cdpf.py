"""Airflow DAG ingest_cdpf: 残联 certificate register, read from the cdpf 前置库 table over SQL.

Pulls one batch into landing/, then standardises and validates it; updates the Asset
lianban://staged/cdpf that the cycle DAG waits on.
"""

from __future__ import annotations

from hub.dagkit import ingestion_dag

dag = ingestion_dag("cdpf", doc_md=__doc__)
