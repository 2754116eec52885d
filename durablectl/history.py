"""A bounded cache of recently active executions' decoded histories.

Pure replay loads and decodes an execution's whole history on every wake-up, so a workflow that
loops over ``wait_for_signal`` slows down as it goes. The cache keeps the decoded steps of the
``cache_size`` most recently run executions and, on the next wake-up, loads only the steps
recorded since (every write of a step gives it a new ``seq``). If the step count disagrees (a
step was removed behind our back), it falls back to a full load, which gives the same result.
"""

from __future__ import annotations

from collections import OrderedDict

from durablectl.store.base import History, Store

# executions whose history (and, see sticky.py, suspended run) stay in memory between
# wake-ups; 0 = replay every time from the database
DEFAULT_CACHE_SIZE = 1000


class HistoryCache:
    def __init__(self, store: Store, size: int) -> None:
        self._store = store
        self._size = max(0, int(size))
        self._entries: OrderedDict[str, History] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def load(self, execution_id: str) -> History:
        """The execution's history as stored now."""
        if self._size == 0:
            return self._store.load_history(execution_id)
        cached = self._entries.pop(execution_id, None)
        history: History | None = None
        if cached is not None:
            delta = self._store.load_history(execution_id, after_seq=cached.max_seq)
            steps = cached.steps | delta.steps
            if len(steps) == delta.step_count:
                history = History(steps=steps, timers=delta.timers,
                                  step_count=delta.step_count,
                                  max_seq=max(cached.max_seq, delta.max_seq))
                self.hits += 1
        if history is None:
            history = self._store.load_history(execution_id)
            self.misses += 1
        self.put(execution_id, history)
        return history

    def put(self, execution_id: str, history: History) -> None:
        """Hold ``history`` as this execution's most recent (a run keeps it current)."""
        if self._size == 0:
            return
        self._entries.pop(execution_id, None)
        self._entries[execution_id] = history
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def discard(self, execution_id: str) -> None:
        """Forget a finished execution."""
        self._entries.pop(execution_id, None)

    def __len__(self) -> int:
        return len(self._entries)
