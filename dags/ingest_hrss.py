"""Airflow DAG ingest_hrss: 人社 employment, pension and work-injury care file, taken from an SFTP/folder drop of GB18030 CSV with an .ok marker.

Pulls one batch into landing/, then standardises and validates it; updates the Asset
lianban://staged/hrss that the cycle DAG waits on.
"""

from __future__ import annotations

from hub.dagkit import ingestion_dag

dag = ingestion_dag("hrss", doc_md=__doc__)
