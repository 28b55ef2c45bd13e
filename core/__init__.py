"""Core: settings, the var/ layout and ledger, atomic publishing, masking, contracts and the master schema.

The lowest layer: it imports nothing else of the project (docs/architecture.md, the layers contract).
"""
