"""Version 1 of the bank's ingestion protocol: the code generated from proto/asyncpipe/demo/v1.

``bank_pb2`` holds the messages (typed by ``bank_pb2.pyi``), ``bank_pb2_grpc`` the
service's stub, servicer base class and registration function. Do not edit them:
change the .proto and run ``python proto/generate.py``.
"""
