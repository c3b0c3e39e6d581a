"""Research studies behind the figures in docs/*.md: one-off measurements that train, index or
sweep on a real catalog and print a table. Each is a module run with ``python -m``:

* ``autoencoders``        — dense/conv AE, VAE and hybrid VAE as retrieval encoders (docs/autoencoders.md)
* ``encoders``            — encoder specs compared on a labelled CSV: P/R/mAP/NDCG and colour proxy (docs/encoders.md)
* ``encoder_variants``    — EfficientNet-Lite0 resize modes, pooling, PCA, colour fusion weights (docs/encoders.md)
* ``colour_joint``        — how the colour-fusion weight trades label precision for colour matches (docs/encoders.md)
* ``label_free``          — the default decision: colour weight, foreground crop, αQE/DBA side by side (README)
* ``k_criteria``          — which unsupervised criterion picks a k that matches the labels (docs/explore.md)
* ``metric_finetune_top`` — does fine-tuning the backbone's last block help metric learning (docs/metric-learning.md)
* ``shop``                — shop the look on the people photos: keypoints, box IoU, hit-rate, speed (docs/shop-the-look.md)

e.g. ``python -m lookalike.bench.studies.encoders --csv catalog.csv --encoders colour-hist effnet-lite0``.
Unlike ``lookalike bench`` (``lookalike.bench``: index, search, embed and API speed, the CLI's
benchmarks), these are not part of the CLI: they take minutes to hours and exist to reproduce
published numbers. They change no production configuration.
"""
