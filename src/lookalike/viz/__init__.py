"""Every PNG lookalike draws. Renderers take plain data (paths, coordinates, counts, ranked hits)
and a target path, and return the path written; they compute nothing about the catalog.

* ``tiles``  — shared font, square thumbnail tiles, captions, captioned grids, ``save_png``
* ``grids``  — search result grids (query + hits) and image groups (duplicates)
* ``map``    — the 2-D thumbnail map with its legend (coordinates from ``explore.projection``)
* ``shop``   — shop-the-look: the photo with garment boxes and a result strip per region
* ``charts`` — matplotlib charts: confusion matrix, training loss curves, image pairs

viz imports only ``lookalike.data`` (image reading) and ``lookalike.config``.
"""
