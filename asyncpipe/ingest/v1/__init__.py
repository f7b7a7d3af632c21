"""Version 1 of the ingestion protocol: the code generated from proto/asyncpipe/ingest/v1.

``ingest_pb2`` holds the messages (typed by ``ingest_pb2.pyi``), ``ingest_pb2_grpc`` the
service's stub, servicer base class and registration function. Do not edit them:
change the .proto and run ``python proto/generate.py``.
"""
