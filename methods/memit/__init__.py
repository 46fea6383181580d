from methods.memit.hparams import MemitHParams
from methods.memit.method import Memit

__all__ = ["Memit", "MemitHParams"]
