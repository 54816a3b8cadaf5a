"""A pytest plugin the false-alarm campaign loads into each of its sessions (``-p``).

When pytest takes a KeyboardInterrupt it calls ``pytest_keyboard_interrupt``; this plugin then
creates the file named by ``$GPT2_CAMPAIGN_INTERRUPTED``, so that the campaign knows its SIGINT
arrived and stops repeating it (see ``false_alarm_campaign._stop``).

Once pytest has taken the interrupt, further SIGINTs are ignored, so that a repeated one cannot
break the session while it writes its report (the campaign still ends a session that lingers with
SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

ENV = "GPT2_CAMPAIGN_INTERRUPTED"


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    marker = os.environ.get(ENV)
    if marker:
        Path(marker).touch()
