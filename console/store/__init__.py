"""The console's storage: :class:`ConsoleStore` (SQLite or PostgreSQL) and its rows.

See docs/console-storage.md.
"""

from console.store.ops import ALERT_ID_RE, SNAPSHOT_SHA256, StoreBatch
from console.store.rows import STATES, AlertRow, DeviceRow, ReviewRow
from console.store.store import ConsoleStore

__all__ = [
    "ALERT_ID_RE",
    "SNAPSHOT_SHA256",
    "STATES",
    "AlertRow",
    "ConsoleStore",
    "DeviceRow",
    "ReviewRow",
    "StoreBatch",
]
