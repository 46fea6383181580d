from suture.methods.rome.hparams import RomeHParams
from suture.methods.rome.method import Rome

__all__ = ["Rome", "RomeHParams"]
