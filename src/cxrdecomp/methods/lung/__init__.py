"""Lung-structure enhancement (Gozes & Greenspan 2018, "Lung structures enhancement in chest radiographs
via CT based FCNN training"): ``network``, ``predict``, ``options``, ``module`` (training), ``data``
(simulated views), ``losses``. Training data: :mod:`cxrdecomp.simulate.lung_generate`."""
