"""asyncpipe's benchmarks, run from the repository (not installed with the package).

* ``python -m bench``: the engine against raw baselines -- a light four-stage chain per
  item and batched (:mod:`bench.engine`), a ``cpu=True`` stage on one and two workers
  (:mod:`bench.cpu`), a CSV -> SQLite upsert (:mod:`bench.csv_sqlite`) and a windowed keyed
  aggregation against a hand-written asyncio aggregator and Bytewax
  (:mod:`bench.windowed_workload`); ``--only`` picks workloads, ``--quick`` makes a smoke
  run, ``--check`` exits 1 on a missed target.
* ``python -m bench.ingest``: the gRPC ingestion service against a raw ``grpc.aio`` echo
  (:mod:`bench.ingest`; needs the ``grpc`` extra).

Each figure is measured against its baseline in the same run and reported as a ratio:
the machine may be shared and noisy, so the ratios matter more than the absolute figures.
"""
