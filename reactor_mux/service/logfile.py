"""``--log-file``: a log file that logrotate can move away.

logrotate renames the file and sends SIGUSR1; ``reopen`` then closes the
renamed file and opens a new one under the original name, so no line is lost
and none goes to the old file after the signal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TextIO


class ReopeningFileHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic at run time only from 3.11
    def __init__(self, path: Path) -> None:
        self.path = path.absolute()  # the log says which file, whatever the cwd
        super().__init__(self._open())

    def _open(self) -> TextIO:
        return self.path.open("a", encoding="utf-8")

    def reopen(self) -> None:
        """Close the file (wherever it was moved) and open ``path`` afresh."""
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            old.close()
        finally:
            self.release()

    def close(self) -> None:
        self.acquire()
        try:
            self.stream.close()
        finally:
            self.release()
        super().close()
