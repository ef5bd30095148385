"""The responder viewer page (`/shl/view`): a static page whose script decrypts in the browser.

The page is the same for every link: the link, with its key, lives in the URL fragment, which
browsers never send, so the server renders nothing link-specific and learns nothing from serving it.
The route that serves it (with `VIEWER_CSP` and `VIEWER_HEADERS`) lands with the `/shl/` routes.
"""

from __future__ import annotations

from typing import Final

from jinja2 import Environment, PackageLoader, select_autoescape

#: The viewer's policy: our own script and style only; fetches only to our own origin (manifest and
#: file locations); no framing, no forms posted anywhere, no referrer (the fragment never leaves, and
#: neither does the page URL).
VIEWER_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
VIEWER_HEADERS: Final = {
    "Content-Security-Policy": VIEWER_CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_templates = Environment(
    loader=PackageLoader("medvault.web", "templates"), autoescape=select_autoescape(["html"]), auto_reload=False
)


def render_viewer(*, static_prefix: str = "/static", break_glass_url: str = "/break-glass") -> str:
    """The viewer page's HTML. Needs `/static/shl-viewer.js` and `/static/shl-viewer.css` served."""
    return _templates.get_template("shl_viewer.html").render(
        static_prefix=static_prefix.rstrip("/"), break_glass_url=break_glass_url
    )
