"""Model cards, the model interface, backbone taps, masking modes, learners and the model registry
(``create_model``, ``list_models``)."""

from .cards import ModelCard, card_of, eval_plan, list_cards
from .registry import create_model, list_models, register_model

__all__ = ["ModelCard", "card_of", "create_model", "eval_plan", "list_cards", "list_models", "register_model"]
