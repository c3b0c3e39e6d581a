"""lookalike.explore: what a catalog's vectors reveal, each as library calls on a ``Catalog``
(the ``cluster``, ``cluster-search``, ``map``, ``duplicates``, ``goes-with``, ``generate`` /
``latent-stats`` commands and the web app's explore views only render them).

The interface, one module each (results are written under ``artifact_dir(catalog_dir, kind)``):

* :mod:`~lookalike.explore.clusters` — ``cluster_catalog`` (k-means; k chosen in a PCA-whitened
  space by silhouette, elbow or Calinski-Harabasz: ``choose_k``), ``load_clusters``,
  ``summarise_clusters``; ``Clusters`` follows the learned-component contract.
* :mod:`~lookalike.explore.cluster_search` — search restricted to the nearest clusters against full
  search: ``cluster_report`` (clusters vs labels, recall and speed per probe count), ``search_item``.
* :mod:`~lookalike.explore.projection` — the 2-D map (PCA then t-SNE / UMAP): ``map_catalog``,
  ``load_map``; ``Projection`` follows the contract.
* :mod:`~lookalike.explore.duplicates` — exact and near-duplicate groups (embeddings or a perceptual
  hash): ``catalog_duplicates``, ``evaluate_catalog`` (precision/recall on generated copies).
* :mod:`~lookalike.explore.goes_with` — items of another category that go with an item:
  ``recommend_item``, ``goes_with_report``; ``LearnedMap`` (fitted on pairs) follows the contract.
* :mod:`~lookalike.explore.latent` — a trained VAE's latent space: ``LatentSpace.build`` (positions,
  decode, nearest, interpolate), ``latent_model``.
* :mod:`~lookalike.explore.stored` — ``stored``: which of these results exist (file checks only).

Ranked answers are :class:`lookalike.search.SearchResult`; distances and scores come from
:mod:`lookalike.index.distances`. ``explore`` and ``shop`` never import each other.
"""
