"""The shipped demo: the seed's bank pipeline (``python -m asyncpipe.demo``)."""
