"""The brokers: ``stub`` (in memory), ``sqlite`` (embedded, the default), ``redis`` and ``rabbitmq``."""

__all__: list[str] = []
