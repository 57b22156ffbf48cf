"""Reaching Ray: the one import of the `ray` extra, and a connection that fails within
seconds (Ray's own ray.init keeps retrying an unreachable address for minutes)."""
import logging
import os
import socket
import threading

CONNECT_TIMEOUT = 10.0  # seconds for the TCP probe plus ray.init


class ClusterUnavailable(RuntimeError):
    """Ray is not installed, or the cluster at the given address cannot be reached."""


def require_ray():
    """The ray module, or ClusterUnavailable naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ClusterUnavailable("training on a Ray cluster needs Ray: pip install 'bptt[ray]'") from None
    return ray


def connect(address=None, timeout=CONNECT_TIMEOUT):
    """Connect this process to the Ray cluster at `address` ("host:port" of its head, as
    printed by `ray start --head`) and return the ray module. Already connected: the
    existing connection is used. address None: Ray's default (RAY_ADDRESS, else a new
    local instance); "local": a new local instance, started on the calling thread (from
    another thread its start fails)."""
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be 'HOST:PORT', 'auto' or None; got {type(address).__name__} {address!r}")
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own default, made explicit
    if address in (None, "local"):  # a new local instance: Ray starts it only from the calling thread
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as error:
            raise ClusterUnavailable(f"cannot start a local Ray instance: {error}") from None
        return ray
    if address != "auto":
        _probe(address, timeout)
    outcome = {}

    def init():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            outcome["done"] = True
        except Exception as error:  # reported to the caller below
            outcome["error"] = error

    # In a thread: an open port that is not a Ray head makes ray.init wait forever.
    thread = threading.Thread(target=init, name="bptt-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" in outcome:
        raise ClusterUnavailable(f"cannot connect to the Ray cluster at {address}: {outcome['error']}") from None
    if "done" not in outcome:
        raise ClusterUnavailable(f"the Ray cluster at {address} did not answer within {timeout:g}s "
                                 "(is it a Ray head node's address, as `ray start --head` prints?)")
    return ray


def _probe(address, timeout):
    """A TCP connection to the head's port, so a wrong address fails at once."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"Ray address must be HOST:PORT (e.g. 127.0.0.1:6379); got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ClusterUnavailable(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None
