"""How the runtime follows a diffusers pipeline: its calls and its scheduler.

A generation of an attached pipeline is one call of the pipeline: its ``__call__`` is wrapped
(the instance's class is swapped for a subclass that wraps it; ``pipe(...)`` looks
``__call__`` up on the class), and for the duration of each call the scheduler the pipeline
holds *at that moment* is followed — ``set_timesteps`` announces the schedule,
``set_begin_index`` where an img2img run starts in it, and every ``step()`` ends a step. A
scheduler swapped after attach (``pipe.scheduler = X.from_config(...)``) is therefore the one
followed, and nothing stays wrapped on a scheduler between calls.

The scheduler given to ``attach(model, scheduler=...)``, or a pipeline's scheduler at attach
time, is also followed between pipeline calls (until removal), for sampling loops that drive
the model and the scheduler themselves; such a generation ends with the last step of its
schedule, or the next ``set_timesteps``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blockdance._patching import Patch

if TYPE_CHECKING:
    from blockdance._runtime import Runtime

#: Attribute a pipeline's denoiser sits on, in the order they are looked for.
DENOISER_ATTRS = ("transformer", "unet")
_RUNTIME_ATTR = "_blockdance_runtime"
_SUBCLASSES: dict[type, type] = {}


def denoiser_of(pipeline: Any) -> Any:
    """The pipeline's denoiser module (``.transformer`` or ``.unet``), or None."""
    for attr in DENOISER_ATTRS:
        model = getattr(pipeline, attr, None)
        if model is not None:
            return model
    return None


def _runtime_of(pipeline: Any) -> Runtime | None:
    """The runtime attached to the pipeline's denoiser (none for an unattached copy).

    A pipeline made from the attached one with ``pipe.from_pipe(...)`` keeps its class and
    shares the denoiser, so its calls are generations too, each following its own scheduler.
    """
    model = denoiser_of(pipeline)
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: the module inside
    return vars(model).get(_RUNTIME_ATTR) if model is not None else None


def pipeline_subclass(cls: type) -> type:
    """A subclass of ``cls`` whose ``__call__`` runs each call as one generation.

    The subclass finds the runtime through the instance at every call, so an instance whose
    runtime was removed, or a copy, behaves exactly like ``cls``. Pickles and deep copies
    name ``cls``, never the subclass.
    """
    sub = _SUBCLASSES.get(cls)
    if sub is not None:
        return sub
    base_call = cls.__call__
    base_reduce_ex: Any = cls.__reduce_ex__

    @functools.wraps(base_call)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        runtime = _runtime_of(self)
        if runtime is None:
            return base_call(self, *args, **kwargs)
        with runtime.pipeline_call(self):
            return base_call(self, *args, **kwargs)

    def reduce_ex(self: Any, protocol: Any) -> Any:
        reduced = base_reduce_ex(self, protocol)
        if isinstance(reduced, tuple) and len(reduced) >= 2 and isinstance(reduced[1], tuple):
            args = tuple(cls if a is sub else a for a in reduced[1])
            return (reduced[0], args, *reduced[2:])
        return reduced

    sub = type(
        cls.__name__,
        (cls,),
        {
            "__call__": call,
            "__reduce_ex__": reduce_ex,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
        },
    )
    _SUBCLASSES[cls] = sub
    return sub


class ClassSwap:
    """The pipeline instance's class swapped for :func:`pipeline_subclass`; undone on removal.

    Args:
        pipeline: The pipeline instance.
    """

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.cls = type(pipeline)
        self.sub = pipeline_subclass(self.cls)
        object.__setattr__(pipeline, "__class__", self.sub)

    def undo(self) -> None:
        if type(self.pipeline) is self.sub:  # someone else's class swap since: leave it
            object.__setattr__(self.pipeline, "__class__", self.cls)


def _timestep_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``t`` of ``scheduler.step(model_output, timestep, sample, ...)``."""
    if len(args) > 1:
        return args[1]
    return kwargs.get("timestep")


class SchedulerTracker:
    """Wraps a scheduler's ``set_timesteps``, ``set_begin_index`` and ``step``.

    Args:
        runtime: The runtime told about each call.
        scheduler: The scheduler to follow.
    """

    def __init__(self, runtime: Runtime, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.patches: list[Patch] = []

        def after(
            attr: str, notify: Callable[[Any, tuple[Any, ...], dict[str, Any]], None]
        ) -> None:
            def make(original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
                @functools.wraps(original)
                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    out = original(*args, **kwargs)
                    if patch.active:
                        notify(scheduler, args, kwargs)
                    return out

                return wrapper

            self.patches.append(Patch(scheduler, attr, make))

        def make_step(original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
            @functools.wraps(original)
            def step(*args: Any, **kwargs: Any) -> Any:
                if not patch.active:
                    return original(*args, **kwargs)
                gen = runtime.scheduler_generation(scheduler)
                if gen is not None:
                    gen.advance_check(_timestep_argument(args, kwargs))
                out = original(*args, **kwargs)
                if gen is not None:
                    runtime.scheduler_stepped(gen)
                return out

            return step

        try:
            after("set_timesteps", lambda s, a, k: runtime.announce(s))
            if hasattr(scheduler, "set_begin_index"):
                after("set_begin_index", lambda s, a, k: runtime.begin_index(s))
            self.patches.append(Patch(scheduler, "step", make_step))
        except Exception:
            self.remove()
            raise

    def remove(self) -> None:
        while self.patches:
            self.patches.pop().undo()
