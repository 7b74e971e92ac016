"""Finds backends through the entry-point group `flashmla.backends`, keeping every load error."""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass

from ..errors import BackendLoadFailure

if sys.version_info >= (3, 10):
    from importlib.metadata import entry_points as _entry_points
else:  # pragma: no cover
    from importlib_metadata import entry_points as _entry_points

GROUP = "flashmla.backends"


@dataclass
class BackendRecord:
    backend: object
    distribution: str
    version: str
    entry_point: str


def entry_points():
    return list(_entry_points(group=GROUP))


def load_all(eps=None):
    """-> (records by name, failures). Never raises: a broken plugin must not break flashmla."""
    records, failures = {}, []
    for ep in (entry_points() if eps is None else eps):
        dist = getattr(ep, "dist", None)
        dist_name = getattr(dist, "name", None) or "?"
        dist_version = getattr(dist, "version", None) or "?"
        try:
            obj = ep.load()
            backend = obj() if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "capabilities")) else obj
            for attr in ("name", "priority", "capabilities", "is_available"):
                if not hasattr(backend, attr):
                    raise TypeError(f"{ep.value} is not a flashmla backend (missing {attr!r})")
            if backend.name != ep.name:
                raise ValueError(f"entry point {ep.name!r} names a backend called {backend.name!r}")
            if ep.name in records:
                prev = records[ep.name]
                raise ValueError(f"duplicate backend name {ep.name!r}: also provided by {prev.distribution}")
        except Exception as exc:  # noqa: BLE001 - any plugin failure is recorded, never raised
            # point at the plugin's own code, not at importlib or at the checks above
            frames = [f for f in traceback.extract_tb(exc.__traceback__)
                      if f.filename != __file__ and not f.filename.startswith("<frozen")]
            where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
            failures.append(BackendLoadFailure(ep.name, dist_name, dist_version,
                                               f"{type(exc).__name__}: {exc}{where}"))
            continue
        records[ep.name] = BackendRecord(backend, dist_name, dist_version, ep.value)
    return records, failures
