"""Airflow DAG cycle: merge the staged sources into the master file (一人一档), evaluate the two
subsidies, build the partner exchange files and write the auditor report.

Scheduled on the staged Assets of every source; each task reads the last accepted batch of
each source from the ledger, so a held batch leaves the master on that source's last good data.
"""

from __future__ import annotations

from hub.dagkit import cycle_dag

dag = cycle_dag(doc_md=__doc__)
