"""``GET /docs``: Swagger UI for the gateway's OpenAPI document, served from a PyPI package.

The page and its assets come from ``swagger-ui-bundle`` (the ``docs`` extra),
never from a CDN: the page works offline and on a closed network. Without the
package ``/docs`` answers 404 saying what to install.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

import falcon

from gateway.payloads import GatewayError

#: The assets the page loads; nothing else of the package is served.
ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>streamscore gateway API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    });
  </script>
</body>
</html>
"""

MISSING = (
    "Swagger UI is not installed with this gateway: pip install 'streamscore[docs]' "
    "(GET /openapi.json has the document)"
)


def swagger_ui_dir() -> Path | None:
    """Where ``swagger-ui-bundle`` keeps Swagger UI's files, or None if it is not installed."""
    try:
        import swagger_ui_bundle  # type: ignore[import-untyped]
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


class Docs:
    """``GET /docs`` (the page) and ``GET /docs/{asset}`` (its scripts and styles)."""

    def __init__(self, assets: Path | None) -> None:
        self.assets = assets
        self._cache: dict[str, bytes] = {}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The Swagger UI page, pointed at ``/openapi.json``."""
        if self.assets is None:
            raise GatewayError(404, MISSING)
        resp.content_type = falcon.MEDIA_HTML
        resp.text = PAGE

    def on_get_asset(self, req: falcon.Request, resp: falcon.Response, asset: str) -> None:
        """One of Swagger UI's files (404 for any other name)."""
        if self.assets is None:
            raise GatewayError(404, MISSING)
        if asset not in ASSETS:
            raise GatewayError(404, f"no such file of the API page: {asset[:80]!r}")
        data = self._cache.get(asset)
        if data is None:
            data = self._cache[asset] = (self.assets / asset).read_bytes()
        resp.content_type = mimetypes.guess_type(asset)[0] or "application/octet-stream"
        resp.cache_control = ["public", "max-age=86400"]
        resp.data = data
