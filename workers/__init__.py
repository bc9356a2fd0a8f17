"""The engine: run spec, registries, training loop, metric capture, Celery app and tasks.

Importing this package imports nothing heavy; torch is imported only where a run is built.
"""
