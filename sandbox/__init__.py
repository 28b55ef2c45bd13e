"""The embedded default: a seeded synthetic province (generator), its ground truth (oracle) and the
police REST simulator. Nothing is imported here, so `import sandbox` stays cheap at DAG parse time.
"""
