"""Disentanglement autoencoder (DAE) for bone suppression and its AE baselines: ``network``, ``predict``, ``options``, ``module`` (+ ``losses``, ``data``)."""
