"""Which serving store a pipeline or the API talks to, as a small picklable value.

``StoreSpec("sqlite", path=...)`` or ``StoreSpec("bigtable", project=..., instance=...)``;
``open()`` returns the matching ``ServingStore``. Pipelines pass a spec to their DoFns (which open
the store in ``setup()``), never an open client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["StoreSpec"]


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """Where the serving store is.

    Attributes:
        kind: ``sqlite`` or ``bigtable``.
        path: SQLite file (``sqlite``).
        project, instance: Bigtable project and instance (``bigtable``; the emulator is used when
            ``BIGTABLE_EMULATOR_HOST`` is set).
        source_priority: source names, best first.
    """

    kind: str
    path: str = ""
    project: str = ""
    instance: str = ""
    source_priority: tuple[str, ...] = ()

    def open(self, *, read_only: bool = False):
        """Open the store.

        Raises:
            ValueError: for an unknown kind.
        """
        if self.kind == "sqlite":
            from stores.sqlite import SqliteServingStore

            return SqliteServingStore(self.path, source_priority=self.source_priority,
                                      read_only=read_only)
        if self.kind == "bigtable":
            from stores.bigtable import BigtableServingStore

            return BigtableServingStore(self.project, self.instance,
                                        source_priority=self.source_priority)
        raise ValueError(f"unknown store kind {self.kind!r}")

    def with_priority(self, priority: Sequence[str]) -> StoreSpec:
        """The same spec with another source priority."""
        return dataclasses.replace(self, source_priority=tuple(priority))
