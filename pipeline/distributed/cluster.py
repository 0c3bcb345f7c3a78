"""Joining a Ray cluster: the same command on a laptop (a local instance) and on a cluster."""

from __future__ import annotations

import re

# What `--ray ADDRESS` accepts: Ray's own words, a Ray Client URL or a head node's host:port.
_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.-]+:\d+)$")


def check_address(value: str) -> str:
    """An address for ray.init, refused when it looks like a path or an override (an input
    written after a bare --ray)."""
    if not _ADDRESS.match(value):
        raise ValueError(
            f"{value!r} is not a Ray address (auto, local, ray://HOST:10001 or HOST:6379); "
            "write --ray=ADDRESS or put --ray after the other arguments"
        )
    return value


def connect(address: str | None = None) -> None:
    """ray.init once: address None joins the cluster RAY_ADDRESS names, or starts a local
    instance with every CPU of this machine."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True, configure_logging=False)
