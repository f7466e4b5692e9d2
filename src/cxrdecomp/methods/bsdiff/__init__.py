"""BS-Diff bone suppression (Chen et al., ISBI 2024, arXiv:2311.15328), registered as ``bsdiff``.

``diffusion`` (noise schedule, MONAI schedulers), ``network`` (U-Net noise predictor + enhancer,
``build``), ``predict`` (conditioning, ``predict``), ``options`` (``cxrdecomp train bsdiff``), ``data``
(training pairs and augmentation), ``module`` (the two training stages, ``train``). docs/bsdiff.md.
"""
