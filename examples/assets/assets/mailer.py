"""mailer: sends what services put on the `mail-out` topic; here, appends it to a mailbox file.

The mailbox is `mailbox.txt` in the mailer's data folder (`.gossamer/data/greencompute/mailer/`
under the manifests' folder when `gossamer up` runs it): one JSON line per mail.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from assets import kit
from gossamer.events.wire import ReceivedEvent

DB = "mailer.sqlite"


def deliver(conn: sqlite3.Connection, event: ReceivedEvent) -> None:
    """Write the mail once (the event id is recorded in the same transaction as the sent row)."""
    mail = event.payload
    conn.execute("INSERT INTO sent VALUES (?, ?, ?)", (event.id, mail.get("to"), event.time_ms))
    with (kit.data_dir() / "mailbox.txt").open("a") as mailbox:
        mailbox.write(json.dumps({"id": event.id, "time": event.time_ms, **mail}) + "\n")


def build() -> Any:
    conn = kit.open_db(
        DB,
        [
            "CREATE TABLE IF NOT EXISTS sent (event_id TEXT PRIMARY KEY, "
            "recipient TEXT, time_ms INTEGER)"
        ],
    )
    conn.close()
    return kit.application([], background=[kit.consumer("mail-out", "mailer", DB, deliver)])


if __name__ == "__main__":
    kit.serve(build())
