"""Lianban hub runtime: settings, storage, ledger, reports and the `hub` CLI."""
