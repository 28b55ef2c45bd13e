"""Transports (sql, folder, rest) on one small protocol: pull one batch for a window and land it."""
