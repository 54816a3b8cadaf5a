"""A pytest plugin the false-alarm campaign loads into each of its sessions (``-p``).

When pytest takes a KeyboardInterrupt it calls ``pytest_keyboard_interrupt``; this plugin then
creates the file named by ``$GPT2_CAMPAIGN_INTERRUPTED``, so that the campaign knows its SIGINT
arrived and stops repeating it (see ``false_alarm_campaign._stop``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV = "GPT2_CAMPAIGN_INTERRUPTED"


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    marker = os.environ.get(ENV)
    if marker:
        Path(marker).touch()
