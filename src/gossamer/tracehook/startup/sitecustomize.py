"""Gossamer's startup hook for apps: installs trace propagation, then the sitecustomize it hides.

`gossamer up` puts this folder first on PYTHONPATH. Python imports `sitecustomize` at startup,
for scripts and `python -m` alike; the first one on the path wins, so this one runs the one
that would have run without it (a distribution's or the app's own).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys


def _install() -> None:
    if os.environ.get("GOSSAMER_TRACE_PROPAGATION", "").strip().lower() == "off":
        return
    try:
        from gossamer.tracehook import install  # noqa: PLC0415
    except ImportError:  # an interpreter without Gossamer: the app runs as it would without
        return
    install()


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))  # noqa: PTH100, PTH120
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]  # noqa: PTH100
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    from importlib.util import module_from_spec  # noqa: PLC0415  (it costs every start)

    module = module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_install()
_chain()
