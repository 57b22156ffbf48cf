"""Training across machines: synchronous data-parallel BPTT on Ray (docs/ray.md).

RayTrainer is the Trainer with its batch shards in Ray actors; with the same number of
shards it ends with exactly the parameters of Trainer(shards=...). Ray (extra `ray`) is
imported only when a trainer connects, so importing this package needs no Ray.
"""
from engine.distributed.cluster import ClusterUnavailable, connect, require_ray
from engine.distributed.group import WorkerFailed
from engine.distributed.trainer import RayTrainer

__all__ = ["RayTrainer", "WorkerFailed", "ClusterUnavailable", "connect", "require_ray"]
