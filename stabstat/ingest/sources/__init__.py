"""The built-in source adapters: ``stabstat`` (our run directories) and ``hf`` (Hugging Face
Trainer logs). The interface is :mod:`stabstat.ingest.source`; the registry that maps
``--format`` names to adapters is :mod:`stabstat.ingest.registry`."""
