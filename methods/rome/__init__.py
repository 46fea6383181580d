from methods.rome.hparams import RomeHParams
from methods.rome.method import Rome

__all__ = ["Rome", "RomeHParams"]
