"""Airflow DAG ingest_cdpf_survey: 残联 needs survey (village and last survey date per holder), read from the cdpf 前置库 table CJR_XQDC over SQL.

Audit input, not merged into the master: pulls one batch into landing/, then standardises and validates
it; the cycle's audit stage reads its accepted batch.
"""

from __future__ import annotations

from hub.dagkit import ingestion_dag

dag = ingestion_dag("cdpf_survey", doc_md=__doc__)
