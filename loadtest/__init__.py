"""``python -m loadtest``: the original's concurrency sweep against the demo's ingestion service.

Starts the demo server itself (or uses ``--target``), sends 200-item transaction batches
from 1, 2, 5, 10, 15 and 20 concurrent clients, times every round trip, checks that every
acknowledged item was stored exactly once, and writes a table, JSON, CSV and a chart.
"""
