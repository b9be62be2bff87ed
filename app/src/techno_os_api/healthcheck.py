"""Docker HEALTHCHECK: exit 0 when GET /health answers 200 with {"status": "ok"}.

Standard library only, so it starts fast and needs nothing the image lacks (no curl).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("API_PORT", "8000")
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (fixed URL)
            ok = response.status == 200 and json.load(response) == {"status": "ok"}
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
