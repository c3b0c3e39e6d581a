"""lookalike.shop: shop the look, from a photo of a dressed person to similar catalog products
per garment (docs/shop-the-look.md).

The interface, one module each:

* :mod:`~lookalike.shop.pipeline` — ``shop_the_look(catalog, image, k=...) -> ShopResult`` (people
  found, a ``RegionResult`` per garment with its ``SearchResult`` hits, notes), ``load_config``.
* :mod:`~lookalike.shop.pose` — person keypoints behind ``PoseDetector``: ``get_detector`` (MediaPipe
  by default), ``register_detector`` for another model; ``DetectorUnavailable`` without it.
* :mod:`~lookalike.shop.regions` — ``body_check`` (head, hips, ankles seen) and ``garment_regions``
  (top / bottom / footwear and the candidates onepiece / outerwear / head / hands, from the keypoints,
  or the reason a region was skipped; bottoms cut by the photo's edge), ``onepiece_by_colour``.
* :mod:`~lookalike.shop.categories` — which catalog labels a region may hold: the synonym prior
  (``region_prior``) and the label probe's evidence (``region_fit``, ``best_category``).

The annotated picture is drawn by :mod:`lookalike.viz.shop`.
"""
