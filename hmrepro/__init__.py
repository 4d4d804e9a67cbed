"""hmrepro: reproduce, verify and extend *HM: Hybrid Masking for Few-Shot Segmentation* (ECCV 2022).

The package is organised by job:

- :mod:`hmrepro.data`        benchmarks, split lists, episodes, preprocessing, the synthetic benchmark
- :mod:`hmrepro.models`      backbone taps, masking modes, learners, the model registry
- :mod:`hmrepro.engine`      training, evaluation, metrics, checkpoints
- :mod:`hmrepro.acquisition` downloading and preparing datasets and weights
- :mod:`hmrepro.reporting`   the paper's tables and figures
- :mod:`hmrepro.cli`         the ``hmrepro`` command line
"""

__version__ = "0.1.0"
