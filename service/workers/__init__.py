"""Ray execution: worker actors holding loaded models, a pool of them, and the dispatcher."""

from suture.service.workers.dispatcher import Dispatcher
from suture.service.workers.pool import WorkerPool

__all__ = ["Dispatcher", "WorkerPool"]
