"""The ingestion benchmark: ``python -m bench.ingest [--concurrency 1,10,50] [--quick]``.

Requests/s and items/s of ``IngestTransactions`` (and/or ``IngestStream``) calls carrying
``--items``-item batches, at each concurrency level, against two servers started side by
side in one run (:mod:`bench.ingest.servers`):

* **raw**: a bare ``grpc.aio`` servicer of the same ``IngestionService`` that answers each
  batch with ``IngestResponse(batch_id, success, items_received)`` without looking at the
  items -- what gRPC itself costs;
* **asyncpipe**: the demo's bank service (:func:`asyncpipe.demo.service.bank_server`, an
  :class:`asyncpipe.ingest.IngestServer` with the bank's converters) on a no-op pipeline
  (an ingress node ``transactions`` -> a terminal sink that drops the batch),
  ``ack="committed"``: every item is checked, the batch goes through the pipeline and the
  reply is built from its receipt.

Each server runs in its own process (spawned, on 127.0.0.1, port 0) and the load
generator (:mod:`bench.ingest.load`) in this one, so no two event loops share a thread.
Both sides get the same pre-serialised requests (valid transactions, a distinct
``batch_id`` each) and the same server options; uvloop is used everywhere when installed.
Per level the runs go raw, asyncpipe, asyncpipe, raw (``--pairs`` times), each with a
warm-up, and the ratio reported is the median of the per-pair ratios
(:mod:`bench.ingest.report`). The server's CPU time per request (from ``/proc``) shows
where a gap comes from even when the load generator is the bottleneck; the last line
(:mod:`bench.ingest.costs`) measures what converting a batch's items costs.

Needs the ``demo`` extra (the bank's service is the demo's): ``pip install -e '.[demo]'``.
"""
