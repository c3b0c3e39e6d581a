"""Every PNG lookalike draws. Renderers take plain data (paths, coordinates, counts, ranked hits)
and a target path, and return the path written; they compute nothing about the catalog.

* ``tiles``  — shared font, square thumbnail tiles, captions, captioned grids, ``save_png``
* ``grids``  — ``result_grid`` (query + ranked hits: search, goes-with), ``group_grid`` (duplicate
  groups), ``array_grid`` (generated images: latent traversals and interpolations)
* ``map``    — ``render``: the 2-D thumbnail map with its legend, returned as an image that
  ``explore.projection`` stores with its coordinates
* ``shop``   — ``render_shop``: the photo with garment boxes and a result strip per region
* ``charts`` — matplotlib: ``confusion_png`` (clusters vs labels), ``epoch_loss_png`` /
  ``relative_loss_png`` (training), ``image_pairs_png`` (inputs over reconstructions),
  ``speed_quality_png`` (``bench models``)
* ``quality`` — the quality page: ``label_bars_png`` (P@1 / mAP@k per label),
  ``top1_confusion_png`` (query label x nearest neighbour's label), ``failure_strips_png``

Every file is written atomically (``lookalike.data.artifacts``).

viz imports only ``lookalike.data`` (image reading) and ``lookalike.config``.
"""
