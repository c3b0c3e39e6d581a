"""lookalike.train: everything fitted on a catalog, behind one contract (:mod:`lookalike.train.base`).

Every learned component has a config dataclass, ``fit(...) -> self``, ``save(directory)`` and
``Component.load(directory)``; named models live in ``model_dir(kind, name, home)``:

* :mod:`~lookalike.train.autoencoder` — ``Autoencoder`` (dense / conv AE, VAE; ``AutoencoderConfig``)
  and ``HybridAutoencoder`` (VAE over pretrained features + image decoder).
* :mod:`~lookalike.train.metric` — ``MetricHeads`` (projection heads + group router; ``MetricHeadConfig``)
  and ``train_metric`` (features, split, fit, evaluate against the pretrained encoder, save).
* :mod:`~lookalike.train.finetune` — ``Finetuned`` (EfficientNet-Lite0's last blocks + head;
  ``FinetuneConfig``), ``train_finetune`` (on labels) and ``adapt`` (self-supervised), saved as
  ``finetuned:NAME``; trained by the same loop as the heads (``metric.fit_embedding``).
* :mod:`~lookalike.train.probes` — ``Probe`` (attribute classifier on vectors; ``ProbeConfig``).
* :mod:`~lookalike.train.losses` — the metric-learning losses (hand-written for the heads,
  pytorch-metric-learning's for fine-tuning).
* :mod:`~lookalike.train.device` — ``resolve_device`` and ``training_threads``, shared by every trainer.

Catalog-derived learned artifacts follow the same contract in :mod:`lookalike.explore`
(``Clusters``, ``LearnedMap``, ``Projection``). Training only fits and saves: the catalog facade
(:class:`lookalike.Catalog`) gathers the data and writes whatever is derived from the result.
"""
