"""Group commit of the acknowledgements the Postgres broker cannot leave to a consumer's next statement.

An ack normally returns at once and leaves its row to the next statement of the consumer that
leased it (see :meth:`PostgresConsumer.ack`). Once that consumer is closed (a worker stopping, a
consumer thread reconnecting) nothing will run that statement: such acks delete their rows here.
"""

from __future__ import annotations

import dataclasses
import threading

from ...errors import BrokerError
from ._storage import PostgresStorage

__all__ = ["AckBatcher"]


@dataclasses.dataclass
class _Ack:
    """One ack waiting for its batch."""

    row_id: int
    done: bool = False
    error: BaseException | None = None


class AckBatcher:
    """Deletes acknowledged rows: an ack made while another batch is being written joins the next one.

    With eight worker threads a batch holds up to eight rows, so the process writes one ``DELETE``
    where it would write eight, and the server works that much less. Each ack returns only once
    its row is deleted. One per broker and process.
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage
        #: Guards _busy and _pending; worker threads wait on it for their batch to be written.
        self._cond = threading.Condition()
        self._busy = False
        self._pending: list[_Ack] = []

    def delete(self, row_id: int) -> None:
        """Delete a row; returns once it is deleted.

        Raises:
          BrokerError: When the batch holding it could not be written (``ConnectionClosed`` after
            the storage's retries).
        """
        ack = _Ack(row_id)
        with self._cond:
            self._pending.append(ack)
            while not ack.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._write_batch()
        error = ack.error
        if error is not None:
            raise (type(error) if isinstance(error, BrokerError) else BrokerError)(str(error)) from error

    def _write_batch(self) -> None:
        """Write every pending ack (called under the condition, which it releases meanwhile)."""
        self._busy = True
        batch, self._pending = self._pending, []
        error: BaseException | None = None
        self._cond.release()
        try:
            self.storage.delete_many([ack.row_id for ack in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter of the batch
            error = exc
        finally:
            self._cond.acquire()
        for ack in batch:
            ack.error = error
            ack.done = True
        self._busy = False
        self._cond.notify_all()
