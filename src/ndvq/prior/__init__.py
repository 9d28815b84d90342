"""The code prior: the token order over a model's code grids (``layout``) and the models that predict them.

``model`` (:class:`CodePrior`), ``tokens`` (:class:`PriorTokenModel`, :func:`load_token_model`: the codec's
entry point), ``store`` (``RUN/prior`` files, fingerprint), ``config`` (:class:`PriorConfig`), ``data`` (encoded
splits, tiles), ``train`` (``ndvq prior``), ``sample`` (``ndvq sample``). See docs/prior.md.
"""

from ndvq.prior.layout import Tile, TokenLayout, TokenModel, layout_for
from ndvq.prior.model import CodePrior
from ndvq.prior.tokens import PriorTokenModel, load_token_model

__all__ = ["Tile", "TokenLayout", "TokenModel", "layout_for", "CodePrior", "PriorTokenModel", "load_token_model"]
