"""Wrapping library functions when, and only when, their module is imported; and undoing it.

A post-import hook: a finder at the front of sys.meta_path answers only for the modules it has
a patch for, finds their spec with the finders behind it, and runs the patch right after the
module's own code. Modules the app never imports are never loaded, nor paid for.

Every app imports this module at startup, so it imports nothing the interpreter has not loaded
already: the finder and loader follow importlib's protocols without subclassing importlib.abc,
and typing is for the type checker only (each would cost milliseconds per start).
"""

from __future__ import annotations

import importlib.machinery
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import ModuleType
    from typing import Any, TypeAlias

    Patch: TypeAlias = Callable[[ModuleType, "Patcher"], None]


class Patcher:
    """Replaces attributes of classes and remembers the originals, so `undo` restores them."""

    def __init__(self) -> None:
        self._originals: list[tuple[object, str, Any]] = []

    def __repr__(self) -> str:
        return f"<Patcher {len(self._originals)} wrapped>"

    def wrap(self, owner: object, name: str, wrapper: Callable[[Any], Any]) -> None:
        """`owner.name = wrapper(owner.name)`, once: a second wrap of the same name is ignored."""
        if any(o is owner and n == name for o, n, _ in self._originals):
            return
        original = vars(owner)[name]
        setattr(owner, name, wrapper(original))
        self._originals.append((owner, name, original))

    def undo(self) -> None:
        """Put every original back, newest first."""
        while self._originals:
            owner, name, original = self._originals.pop()
            setattr(owner, name, original)


class PatchOnImport:
    """Runs `patches[name](module, patcher)` once module `name` has executed."""

    def __init__(self, patches: Mapping[str, Patch], patcher: Patcher) -> None:
        self._patches = dict(patches)
        self._patcher = patcher

    def __repr__(self) -> str:
        return f"<PatchOnImport {sorted(self._patches)}>"

    def patch_loaded(self) -> None:
        """Patch the modules that were imported before this finder was installed."""
        for name, patch in self._patches.items():
            module = sys.modules.get(name)
            if module is not None:
                _apply(patch, module, self._patcher)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        patch = self._patches.get(fullname)
        if patch is None:
            return None
        spec = _find_behind(self, fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        # A loader by protocol, not by class (see the module's docstring).
        spec.loader = _PatchingLoader(spec.loader, patch, self._patcher)  # type: ignore[assignment]
        return spec


class _PatchingLoader:
    """The module's own loader, then the patch; the module keeps its own loader afterwards."""

    def __init__(self, loader: Any, patch: Patch, patcher: Patcher) -> None:
        self._loader = loader
        self._patch = patch
        self._patcher = patcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _apply(self._patch, module, self._patcher)


def _find_behind(
    finder: PatchOnImport,
    fullname: str,
    path: Sequence[str] | None,
    target: ModuleType | None,
) -> importlib.machinery.ModuleSpec | None:
    for other in sys.meta_path:
        find_spec = getattr(other, "find_spec", None)
        if other is finder or find_spec is None:
            continue
        spec: importlib.machinery.ModuleSpec | None = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _apply(patch: Patch, module: ModuleType, patcher: Patcher) -> None:
    # An app must start even when a library changed under a patch: it then runs unpatched.
    try:
        patch(module, patcher)
    except Exception as error:
        sys.stderr.write(
            f"gossamer: trace propagation is off for {module.__name__}: "
            f"{type(error).__name__}: {error}\n"
        )
