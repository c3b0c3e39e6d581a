"""Benchmarks: figures measured side by side in one run, reached only from the CLI (``lookalike bench``)
and ``python -m``. Nothing here changes production configuration or what a catalog serves.

* ``vectors``, ``data`` — realistic synthetic embeddings fitted to a catalog's real ones, grown to a size
* ``index``  — ``lookalike bench index|search``: index kinds and filtered search against exact search
* ``embed``  — ``lookalike bench embed``: the indexing pipeline against a one-image-at-a-time loop
* ``api``    — ``lookalike bench api``: loopback load test of ``lookalike serve``
* ``models`` — ``lookalike bench models``: torch vs ONNX fp32/fp16/int8 size, speed and quality
* ``studies`` — research scripts behind the numbers in docs/*.md (``python -m lookalike.bench.studies.NAME``)
"""
