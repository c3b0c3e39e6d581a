"""lookalike.data: images and rows in, a catalog's store, and files written safely (the bottom layer).

The interface, one module each:

* :mod:`~lookalike.data.images` — ``open_image`` (bytes/path/PIL -> RGB, bombs and bad files as
  ``ImageError`` with a reason), ``resize_square``, ``thumbnail``.
* :mod:`~lookalike.data.sources` — ``read_source(folder | CSV/TSV/JSONL/Parquet/xlsx)`` ->
  ``SourceRead(rows, errors, skipped)``: ``SourceRow`` list, ``RowError`` lists (one outcome per file).
* :mod:`~lookalike.data.store` — ``Store``: SQLite items, metadata and vectors per encoder; only
  ``catalog``, ``search`` and this package touch it (everything above goes through ``Catalog``).
* :mod:`~lookalike.data.ingest` — the one pipeline ``ingest(store, rows, encoder, executor=...)``
  with a ``ThreadExecutor`` or :class:`~lookalike.data.ray_ingest.RayExecutor`; the encoder is
  anything shaped like ``IngestEncoder`` (this layer imports no encoder).
* :mod:`~lookalike.data.artifacts` — atomic writes (``atomic_file``, ``write_json``, ``save_npy``,
  ``save_npz``, ``save_image``...), the two cache shapes (``read_cache``/``write_cache`` stamped by
  ``digest``, per-key ``KeyedCache``) and ``encoder_key`` (an encoder spec as a file name).
* :mod:`~lookalike.data.fetch` — ``Fetcher``: images of URL rows downloaded (bounded, retried,
  size-capped, sniffed) into a cache keyed by URL; each failure a row reason (``FetchError``).
* :mod:`~lookalike.data.pixel_cache` — a catalog's images as one cached uint8 array (training data).
"""
