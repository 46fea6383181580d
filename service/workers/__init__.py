"""Ray execution: worker actors holding loaded models, a pool of them, and the dispatcher."""

from service.workers.dispatcher import Dispatcher
from service.workers.pool import WorkerPool

__all__ = ["Dispatcher", "WorkerPool"]
