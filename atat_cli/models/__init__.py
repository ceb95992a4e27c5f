"""Networks: the DiT denoiser, the AR baseline, and the blocks they share."""

from atat_cli.models.ar import ARModel
from atat_cli.models.dit import DiT


def build_model(cfg, vocab_size: int):
    """The network a RunConfig asks for: AR for method 'ar', the DiT otherwise."""
    if cfg.method == "ar":
        return ARModel(cfg.model, vocab_size)
    return DiT(cfg.model, vocab_size)


def count_parameters(model, non_embedding: bool = False) -> int:
    params = model.named_parameters()
    return sum(p.numel() for name, p in params if not (non_embedding and name.startswith("embed")))


__all__ = ["ARModel", "DiT", "build_model", "count_parameters"]
