"""Class-based actors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .actor import Actor, actor

__all__ = ["GenericActor"]


class _GenericActorMeta(type):
    """Builds an actor for each concrete subclass and binds the class name to an instance of it.

    Dramatiq code relies on ``MyActor.send(...)`` working after ``class MyActor(GenericActor)``,
    which requires the class statement to produce an instance; this metaclass keeps that behaviour.
    """

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> Any:
        clazz = super().__new__(mcs, name, bases, attrs)
        meta: Any = getattr(clazz, "Meta", None)
        if meta is None:
            meta = type("Meta", (), {})
        if getattr(meta, "abstract", False):
            # Subclasses without a Meta of their own inherit these options and become concrete.
            meta.abstract = False
            return clazz
        options = {key: value for key, value in vars(meta).items() if not key.startswith("_")}
        options.pop("abstract", None)
        decorator = options.pop("actor", actor)
        instance = clazz()
        instance.__actor__ = decorator(instance, actor_name=options.pop("actor_name", name), **options)
        return instance


class GenericActor(metaclass=_GenericActorMeta):
    """Base class for class-based actors: subclass it and implement ``perform``.

    Options go in an inner ``Meta`` class; ``Meta.abstract = True`` makes a base class for other
    actors. Attributes not found on the instance are looked up on its actor (``send``, ``message``...).
    """

    __actor__: Actor[..., Any]

    class Meta:
        abstract = True

    if not TYPE_CHECKING:
        # Actors name their logger after fn.__name__; an instance has none of its own.
        @property
        def __name__(self) -> str:
            return type(self).__name__

    def __getattr__(self, name: str) -> Any:
        if name == "__actor__":
            raise AttributeError(name)
        return getattr(self.__actor__, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.perform(*args, **kwargs)

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        """The actor's body; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement perform()")
