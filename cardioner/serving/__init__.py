"""Serving an export: ``cardioner serve`` (HTTP and INCEpTION's external-recommender protocol).

- ``engine``: the export loaded once, and the one function the server calls (documents in, documents out).
- ``batching``: the queue that gathers concurrent requests into one model call, run off the event loop.
- ``app``: the ASGI application (FastAPI): ``/predict``, ``/health``, ``/info``, ``/inception/predict``.
- ``inception``: CAS XMI in, predictions into the requested layer and feature, CAS XMI out (dkpro-cassis).

FastAPI, uvicorn and dkpro-cassis come with the ``serve`` extra: ``pip install "cardioner[serve]"``.
"""
