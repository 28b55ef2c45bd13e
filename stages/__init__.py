"""Stages: one module per stage of a cycle (ingest, merge, eligibility, exchange, audit, report, deliver).

Each takes its inputs explicitly and is called by the runtime (hub.dagkit) or the CLI.
"""
