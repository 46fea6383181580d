from suture.methods.memit.hparams import MemitHParams
from suture.methods.memit.method import Memit

__all__ = ["Memit", "MemitHParams"]
