"""Airflow DAGs of Lianban, built from the configuration: one ingestion DAG per configured source and
the cycle DAG.

Each source's `sources:` entry in the config (LIANBAN_CONFIG, default config/sandbox.yaml) declares
its transport, connection, schedule and contract, so adding a department adds its DAG here without a
code change. An ingestion DAG pulls one batch into landing/, standardises and validates it, and
updates the Asset lianban://staged/<source>. The cycle DAG, scheduled on the staged Assets of the
sources that feed the master file, merges them into the master file (一人一档), evaluates the
subsidies, builds the partner exchange files, runs the 三查 audits and writes the auditor report; each task reads
the last accepted batch of each source from the ledger, so a held batch leaves the master on that
source's last good data. Parsing reads only the YAML config: no database, network or heavy import.
"""

from __future__ import annotations

from core.settings import load_settings
from hub.dagkit import cycle_dag, ingestion_dag

_settings = load_settings()
_merged = _settings.merged_sources

for _name, _source in _settings.sources.items():
    _doc = (
        f"Airflow DAG ingest_{_name}: {_source.description or _name}\n\n"
        f"Transport `{_source.transport}`, schedule `{_source.schedule}`, contract `{_source.contract}`; "
        + ("feeds the master file." if _name in _merged else "not merged into the master file.")
    )
    _wait = getattr(_source, "wait", None)  # drop sources (folder, sftp) may wait for a late file
    globals()[f"ingest_{_name}"] = ingestion_dag(
        _name, doc_md=_doc, schedule=_source.schedule, wait=_wait.model_dump() if _wait else None
    )

cycle = cycle_dag(doc_md=__doc__, sources=list(_merged), partitions=_settings.partitions)
