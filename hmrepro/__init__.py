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


def create_model(name: str, backbone: str = "resnet50", pretrained: bool = True, **kwargs):
    """Build a registered model by name (see :func:`list_models`); imports torch on first use."""
    from .models.registry import create_model as _create_model

    return _create_model(name, backbone=backbone, pretrained=pretrained, **kwargs)


def list_models() -> list[str]:
    """Names of the registered models, e.g. ``hsnet``, ``hsnet-hm``."""
    from .models.registry import list_models as _list_models

    return _list_models()
