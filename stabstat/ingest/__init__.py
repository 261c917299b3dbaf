"""The ingest: the front door that turns training logs into runs in the store.

>>> from stabstat.ingest import ingest
>>> with stabstat.open("stabstat.duckdb", read_only=False) as store:  # doctest: +SKIP
...     report = ingest(store, ["runs/"])

Modules (the ingest imports the store; the store never imports the ingest):

* :mod:`~stabstat.ingest.source`: the source-adapter interface and :class:`RunInput`;
* :mod:`~stabstat.ingest.registry`: ``--format`` name -> adapter;
* :mod:`~stabstat.ingest.sources`: the ``stabstat`` and ``hf`` adapters;
* :mod:`~stabstat.ingest.discover`: the one walker (``discover``, ``find_run_dirs``; also
  used by ``stabstat validate``);
* :mod:`~stabstat.ingest.fingerprint`: what makes re-ingest idempotent;
* :mod:`~stabstat.ingest.batch`: :func:`ingest` (batches, transactions, retries, rejections);
* :mod:`~stabstat.ingest.remote`: ``s3://`` prefixes through a local mirror (:func:`ingest_paths`).
"""

from __future__ import annotations

from stabstat.ingest.batch import ingest
from stabstat.ingest.remote import ingest_paths
from stabstat.ingest.source import PrepareOptions, Reject, RunInput, SourceAdapter
from stabstat.store.load import IngestReport, Rejection

__all__ = [
    "IngestReport",
    "PrepareOptions",
    "Reject",
    "Rejection",
    "RunInput",
    "SourceAdapter",
    "ingest",
    "ingest_paths",
]
