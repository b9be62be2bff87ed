"""The ASGI application, `techno_os_api.main:app`, configured from the environment.

Importing this module validates the settings; an invalid environment stops the process with a
message naming the variable at fault.
"""

from __future__ import annotations

import logging

from techno_os_api.application import create_app
from techno_os_api.core.config import load_settings

settings = load_settings()
if not logging.getLogger().handlers:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
app = create_app(settings)
