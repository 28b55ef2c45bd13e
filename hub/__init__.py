"""Lianban hub runtime (DAG builders, in-process Airflow, runs) and the `hub` CLI."""
