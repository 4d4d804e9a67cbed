"""Backbone taps, support masking modes, learners and the model registry (``create_model``, ``list_models``)."""

from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
