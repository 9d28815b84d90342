"""The code prior: the token order over a model's code grids (``layout``) and the models that predict them."""

from ndvq.prior.layout import Tile, TokenLayout, TokenModel, layout_for

__all__ = ["Tile", "TokenLayout", "TokenModel", "layout_for"]
