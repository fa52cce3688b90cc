"""Order-safe method replacement, and copies and pickles that come out unattached.

A :class:`Patch` puts a wrapper on an instance attribute (a module's ``forward``, a
scheduler's ``step``) and takes it off again without disturbing what others layered since:

- if the wrapper is still the attribute's value, the value it replaced is put back (or the
  instance attribute deleted, when there was none);
- if something was layered above it meanwhile (a diffusers hook registered after attach), or
  the attribute was replaced by its owner (a hook removed below it), the wrapper is left in
  place but switched off: from then on it calls straight through to what it wrapped. Nothing
  that another library installed is removed or brought back.

:func:`guard_pickling` gives a patched object an instance ``__getstate__`` so that
``copy.deepcopy`` and ``pickle`` (``torch.save``) see the object as if blockdance were not
attached: the copy is a plain, unattached module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_GETSTATE = "__getstate__"
_MISSING = object()


class Patch:
    """One replaced attribute that can be taken off in any order.

    Args:
        owner: The object whose instance attribute is replaced.
        attr: The attribute name (``"forward"``, ``"step"`` …).
        make: Builds the wrapper from the callable it wraps and this patch; the wrapper
            must call through to the wrapped callable whenever ``patch.active`` is false.
    """

    def __init__(
        self,
        owner: Any,
        attr: str,
        make: Callable[[Callable[..., Any], Patch], Callable[..., Any]],
    ) -> None:
        self.owner = owner
        self.attr = attr
        self.active = True
        self.previous = vars(owner).get(attr, _MISSING)  # the instance value replaced, if any
        self.wrapped: Callable[..., Any] = getattr(owner, attr)  # what the wrapper calls
        self.wrapper = make(self.wrapped, self)
        self.wrapper._blockdance_patch = self  # type: ignore[attr-defined]
        setattr(owner, attr, self.wrapper)

    @property
    def on_top(self) -> bool:
        """Whether the owner's attribute is still this wrapper."""
        return vars(self.owner).get(self.attr, _MISSING) is self.wrapper

    @property
    def knocked_out(self) -> bool:
        """Whether the owner's attribute was reset to the class's own method since.

        That happens when a hook installed *before* this patch is removed by its library
        (diffusers restores the original ``forward``): this wrapper is no longer called.
        """
        if not self.active or self.on_top:
            return False
        current = vars(self.owner).get(self.attr, _MISSING)
        if current is _MISSING:
            return True
        func = getattr(current, "__func__", None)
        return func is not None and func is getattr(type(self.owner), self.attr, None)

    def undo(self) -> None:
        """Take the wrapper off, or switch it off where others layered on it since."""
        self.active = False
        if not self.on_top:
            return  # layered over, or replaced by its owner: leave theirs alone
        previous = _skip_switched_off(self.previous)
        if previous is _MISSING:
            delattr(self.owner, self.attr)
        else:
            setattr(self.owner, self.attr, previous)

    def unpatched_state(self, state: dict[str, Any]) -> None:
        """Edit a copy of the owner's ``__dict__`` to what it would be without this patch."""
        if state.get(self.attr, _MISSING) is not self.wrapper:
            return
        previous = _skip_switched_off(self.previous)
        if previous is _MISSING:
            del state[self.attr]
        else:
            state[self.attr] = previous


def _skip_switched_off(value: Any) -> Any:
    """``value``, or what it wraps where it is a blockdance wrapper switched off earlier."""
    patch = getattr(value, "_blockdance_patch", None)
    while isinstance(patch, Patch) and not patch.active:
        value = patch.previous
        patch = getattr(value, "_blockdance_patch", None)
    return value


class PickleGuard:
    """An instance ``__getstate__`` that leaves blockdance's attributes out of copies.

    Args:
        owner: The patched object.
        patches: The patches on ``owner`` (read when a copy is made, so later ones count).
        drop: Further instance attributes to leave out (the runtime's back-reference).
    """

    def __init__(self, owner: Any, patches: list[Patch], drop: tuple[str, ...] = ()) -> None:
        self.owner = owner
        self.patches = patches
        self.drop = drop
        self.previous = vars(owner).get(_GETSTATE, _MISSING)
        self.installed = self.previous is _MISSING  # never replace someone's own __getstate__
        if self.installed:
            setattr(owner, _GETSTATE, self.getstate)

    def getstate(self) -> Any:
        # the class's own __getstate__ first (nn.Module's drops its compiled call), then ours
        parent = getattr(type(self.owner), _GETSTATE, object.__getstate__)
        state = parent(self.owner)
        if isinstance(state, dict):
            return self._clean(dict(state))
        if isinstance(state, tuple) and state and isinstance(state[0], dict):
            return (self._clean(dict(state[0])), *state[1:])
        return state

    def _clean(self, state: dict[str, Any]) -> dict[str, Any]:
        state.pop(_GETSTATE, None)
        for name in self.drop:
            state.pop(name, None)
        for patch in self.patches:
            if patch.owner is self.owner and patch.active:
                patch.unpatched_state(state)
        return state

    def undo(self) -> None:
        if self.installed and vars(self.owner).get(_GETSTATE) is self.getstate:
            delattr(self.owner, _GETSTATE)
        self.installed = False


def guard_pickling(owner: Any, patches: list[Patch], drop: tuple[str, ...] = ()) -> PickleGuard:
    """Make ``copy.deepcopy(owner)`` and ``pickle.dumps(owner)`` leave blockdance out.

    Args:
        owner: The patched object.
        patches: The list of patches (shared, may grow); those on ``owner`` are undone in
            the copy.
        drop: Instance attributes to leave out of the copy.
    """
    return PickleGuard(owner, patches, drop)
