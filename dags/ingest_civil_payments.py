"""Airflow DAG ingest_civil_payments: 民政 两项补贴 payment roll (发放名册), taken from a folder drop of GB18030 CSV with an .ok marker.

Audit input, not merged into the master: pulls one batch into landing/, then standardises and validates
it; the cycle's audit stage reads its accepted batch.
"""

from __future__ import annotations

from hub.dagkit import ingestion_dag

dag = ingestion_dag("civil_payments", doc_md=__doc__)
