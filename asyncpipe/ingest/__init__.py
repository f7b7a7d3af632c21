"""The gRPC ingestion service: batches of clients, transactions and scores into a pipeline.

The protocol is ``proto/asyncpipe/ingest/v1/ingest.proto``; its generated Python modules
live in :mod:`asyncpipe.ingest.v1`.
"""
