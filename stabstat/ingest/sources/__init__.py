"""The built-in source adapters, one module per format: ``stabstat`` (our run directories),
``hf`` (Hugging Face Trainer logs), ``tensorboard`` (event files), ``lightning`` (CSVLogger
folders) and ``table`` (tidy tables of many runs); :mod:`stabstat.ingest.tags` holds the
tag-mapping rules the last three share. The interface is :mod:`stabstat.ingest.source`; the
registry that maps ``--format`` names to adapters is :mod:`stabstat.ingest.registry`."""
