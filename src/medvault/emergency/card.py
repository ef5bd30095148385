"""The emergency card: QR code, printable wallet card (PDF) and flash-drive bundle (issue 4, item 3).

Pure functions: they take the link text (`<viewer URL>#shlink:/...`), the patient's chosen label and
printed alerts, or the summary's compact JWE, and return bytes. Nothing is written anywhere; the CLI or
a page decides where the bytes go.

What each artefact holds, and why:

* **QR** (segno, error correction M, boosted when the symbol size allows): the full viewer link, so any
  phone camera opens the responder viewer; the key travels in the URL fragment, which browsers never
  send to the server.
* **Wallet card** (reportlab): an A4 page with a credit-card-sized (ISO/IEC 7810 ID-1, 85.6 x 54 mm)
  front and a fold-over back, drawn at actual size with a solid cut line and a dashed fold line. The
  front has the QR, the patient's label and "Emergency medical information - scan with a phone camera";
  the back lists the alerts the patient chose to print. Nothing else from the record is printed: a
  card can be lost, and a shoulder-surfer reads only what the patient chose (design-emergency.md).
* **Flash-drive bundle**: `emergency-link.txt`, `emergency-qr.png` and a standalone
  `emergency.html` that carries only the *encrypted* summary (the link's compact JWE) and decrypts it
  in the browser with WebCrypto once the person pastes the link or its 43-character key. The page's
  script is the responder viewer's own `shl-viewer.js`, inlined at build time, so one decrypt/render
  code path serves both; a Content-Security-Policy meta tag pins that script by hash and forbids every
  network request (`connect-src 'none'`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import segno
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader, simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from medvault.emergency import jwe
from medvault.emergency.errors import CardError
from medvault.emergency.shl import parse_shlink

#: ISO/IEC 7810 ID-1, the size of a bank card.
CARD_WIDTH_MM: Final = 85.6
CARD_HEIGHT_MM: Final = 54.0
CARD_TAGLINE: Final = "Emergency medical information \u2014 scan with a phone camera"
#: The card back has room for about this many lines of alert text at a legible 7 pt.
MAX_PRINTED_ALERTS: Final = 8
MAX_ALERT_CHARS: Final = 200
MAX_LABEL_CHARS: Final = 80
#: Level M, boosted by segno to Q or H whenever that needs no bigger symbol. A ~270-character link is
#: version 12 at M (0.56 mm modules on the card) but version 15 at Q (0.48 mm): on a 41 mm code,
#: larger modules help a phone more than extra redundancy does.
QR_ERROR: Final = "m"

LINK_FILE: Final = "emergency-link.txt"
QR_FILE: Final = "emergency-qr.png"
HTML_FILE: Final = "emergency.html"

#: Card fonts, embedded (subset) in the PDF. DejaVu Sans (Debian's fonts-dejavu-core) covers most
#: scripts' Latin, Greek and Cyrillic names; Bitstream Vera ships inside reportlab itself, so a card
#: can always be made. Text the chosen font cannot draw is refused, never printed as empty boxes.
_FONT_CANDIDATES: Final = (
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    ("Vera.ttf", "VeraBd.ttf"),
)

_WEB_PACKAGE = "medvault.web"  # its static/ folder holds the viewer script and style
VIEWER_SCRIPT: Final = "shl-viewer.js"
VIEWER_STYLE: Final = "shl-viewer.css"


def _qr(text: str) -> segno.QRCode:
    if not text:
        raise CardError("QR text is required")
    # micro=False: phone cameras do not read Micro QR codes.
    return segno.make(text, error=QR_ERROR, micro=False, boost_error=True)


def qr_svg(text: str, *, scale: int = 4) -> bytes:
    """The QR code as SVG (for pages: scales to any size without blur)."""
    out = io.BytesIO()
    _qr(text).save(out, kind="svg", scale=scale, xmldecl=False, svgclass=None, lineclass=None)
    return out.getvalue()


def qr_png(text: str, *, scale: int = 8) -> bytes:
    """The QR code as PNG; the default 8 px modules print sharply at card size."""
    out = io.BytesIO()
    _qr(text).save(out, kind="png", scale=scale)
    return out.getvalue()


@dataclass(frozen=True)
class _Fonts:
    regular: str
    bold: str
    printable: frozenset[int]  # code points both faces can draw


@functools.cache
def _fonts() -> _Fonts:
    """Register the first available card font pair once, under names of its own files."""
    for regular, bold in _FONT_CANDIDATES:
        if regular.startswith("/") and not (Path(regular).is_file() and Path(bold).is_file()):
            continue
        names = ("MedvaultCard-" + Path(regular).stem, "MedvaultCard-" + Path(bold).stem)
        faces = (TTFont(names[0], regular), TTFont(names[1], bold))
        for face in faces:
            pdfmetrics.registerFont(face)
        printable = frozenset(faces[0].face.charToGlyph) & frozenset(faces[1].face.charToGlyph)
        return _Fonts(regular=names[0], bold=names[1], printable=printable)
    raise CardError("no font for the card")  # unreachable: reportlab ships Vera


def _check_card_text(label: str, alerts: tuple[str, ...] | list[str]) -> tuple[str, list[str]]:
    label = label.strip()
    if not label:
        raise CardError("card label is required")
    if len(label) > MAX_LABEL_CHARS:
        raise CardError(f"card label is longer than {MAX_LABEL_CHARS} characters")
    if len(alerts) > MAX_PRINTED_ALERTS:
        raise CardError(f"at most {MAX_PRINTED_ALERTS} alerts fit on the card")
    cleaned: list[str] = []
    for alert in alerts:
        text = " ".join(alert.split())
        if not text:
            raise CardError("printed alerts must not be empty")
        if len(text) > MAX_ALERT_CHARS:
            raise CardError(f"a printed alert is longer than {MAX_ALERT_CHARS} characters")
        cleaned.append(text)
    printable = _fonts().printable
    for text in (label, *cleaned):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise CardError("card text must not contain control characters")
        if any(ord(c) not in printable for c in text):
            raise CardError("card text has characters the card's font cannot print")
    return label, cleaned


def wallet_card_pdf(*, link_text: str, label: str, alerts: tuple[str, ...] | list[str] = ()) -> bytes:
    """A printable wallet card: one A4 page with the card's front and fold-over back at actual size.

    `link_text` is what the QR holds (checked to be a valid SMART Health Link); `label` the patient's
    chosen label; `alerts` the alerts the patient chose to print (at most `MAX_PRINTED_ALERTS`).
    """
    parse_shlink(link_text)  # a card with an unreadable link would fail when it matters most
    label, printed = _check_card_text(label, alerts)
    fonts = _fonts()
    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=A4, pageCompression=1, invariant=True)
    c.setTitle("Emergency card")
    c.setAuthor("")
    c.setSubject("")
    c.setCreator("medvault")
    page_h = A4[1]
    w, h = CARD_WIDTH_MM * mm, CARD_HEIGHT_MM * mm
    x0, y_fold = 20 * mm, page_h - 20 * mm - h  # front above the fold line, back below it

    c.setFont(fonts.regular, 9)
    c.drawString(x0, page_h - 12 * mm, "Print at 100 % (actual size). Cut along the solid line, fold along the dashed")
    c.drawString(x0, page_h - 16 * mm, "line, and keep the card in your wallet. Turn the card over to read the back.")

    _front(c, fonts, x0=x0, y0=y_fold, w=w, h=h, link_text=link_text, label=label)
    # The back is drawn upside down below the fold: folded behind the front and turned over like a
    # bank card (left to right), it reads the right way up.
    c.saveState()
    c.translate(x0 + w, y_fold)
    c.rotate(180)
    _back(c, fonts, w=w, h=h, alerts=printed)
    c.restoreState()

    c.setLineWidth(0.5)
    c.setStrokeColorRGB(0, 0, 0)
    c.roundRect(x0, y_fold - h, w, 2 * h, 3 * mm, stroke=1, fill=0)  # cut line
    c.setDash(3, 2)
    c.line(x0, y_fold, x0 + w, y_fold)  # fold line
    c.setDash()
    c.setFont(fonts.regular, 7)
    c.drawString(x0 + w + 3 * mm, y_fold - 1 * mm, "fold")
    c.showPage()
    c.save()
    return out.getvalue()


def _front(
    c: canvas.Canvas, fonts: _Fonts, *, x0: float, y0: float, w: float, h: float, link_text: str, label: str
) -> None:
    band = 9 * mm
    c.setFillColorRGB(0.72, 0.07, 0.07)
    c.rect(x0, y0 + h - band, w, band, stroke=0, fill=1)
    c.setFillColorRGB(1, 1, 1)
    c.setFont(fonts.bold, 10)
    c.drawString(x0 + 4 * mm, y0 + h - band + 3 * mm, "EMERGENCY MEDICAL INFORMATION")

    qr_size = h - band - 4 * mm
    image = ImageReader(io.BytesIO(qr_png(link_text, scale=10)))
    c.drawImage(image, x0 + 2 * mm, y0 + 2 * mm, width=qr_size, height=qr_size)

    text_x = x0 + 2 * mm + qr_size + 2 * mm
    text_w = x0 + w - 3 * mm - text_x
    c.setFillColorRGB(0, 0, 0)
    y = y0 + h - band - 6 * mm
    c.setFont(fonts.bold, 10)
    for line in simpleSplit(label, fonts.bold, 10, text_w)[:3]:
        c.drawString(text_x, y, line)
        y -= 4.5 * mm
    y -= 1.5 * mm
    c.setFont(fonts.regular, 7.5)
    for line in simpleSplit(CARD_TAGLINE, fonts.regular, 7.5, text_w):
        c.drawString(text_x, y, line)
        y -= 3.5 * mm


def _back(c: canvas.Canvas, fonts: _Fonts, *, w: float, h: float, alerts: list[str]) -> None:
    c.setFillColorRGB(0.72, 0.07, 0.07)
    c.setFont(fonts.bold, 9)
    c.drawString(4 * mm, h - 7 * mm, "ALERTS" if alerts else "EMERGENCY MEDICAL INFORMATION")
    c.setFillColorRGB(0, 0, 0)
    y = h - 12 * mm
    size = 7.5
    if not alerts:
        lines = simpleSplit("Scan the code on the front with a phone camera.", fonts.regular, size, w - 8 * mm)
        alerts_lines = [lines]
    else:
        alerts_lines = [simpleSplit("\u2022 " + a, fonts.regular, size, w - 8 * mm) for a in alerts]
    c.setFont(fonts.regular, size)
    bottom = 8 * mm
    for lines in alerts_lines:
        for line in lines:
            if y < bottom:
                c.drawString(4 * mm, y, "\u2026 see the full list by scanning the code")
                return
            c.drawString(4 * mm, y, line)
            y -= size * 0.45 * mm
    c.setFont(fonts.regular, 6)
    c.setFillColorRGB(0.35, 0.35, 0.35)
    c.drawString(4 * mm, 3 * mm, "Alerts printed as chosen by the card holder.")


@dataclass(frozen=True)
class BundleFile:
    name: str
    content: bytes
    media_type: str


def flash_drive_bundle(*, link_text: str, summary_jwe: str, label: str | None = None) -> list[BundleFile]:
    """Files for a USB stick: the link text, its QR image and a self-contained offline page.

    `summary_jwe` is the summary encrypted under the link's key (the link's own file). It is checked
    to decrypt with the link's key, in memory only, so the drive never holds a page no key opens; the
    page itself holds only the ciphertext.
    """
    payload = parse_shlink(link_text)
    token = summary_jwe.strip()
    jwe.decrypt_file(token=token, key=payload.key_bytes)  # raises JweError on a mismatched key
    title = label.strip() if label and label.strip() else (payload.label or "Emergency medical information")
    return [
        BundleFile(LINK_FILE, (link_text.strip() + "\n").encode("utf-8"), "text/plain; charset=utf-8"),
        BundleFile(QR_FILE, qr_png(link_text), "image/png"),
        BundleFile(HTML_FILE, offline_page(summary_jwe=token, title=title).encode("utf-8"), "text/html"),
    ]


def _static_text(name: str) -> str:
    return resources.files(_WEB_PACKAGE).joinpath("static", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def offline_page(*, summary_jwe: str, title: str) -> str:
    """The standalone `emergency.html`: the viewer's script and style inlined, the JWE as a data block.

    The JWE sits in a `<script type="application/jose">` element, which browsers never execute; its
    text is base64url and dots only, so it cannot close the element. The meta CSP allows exactly the
    inlined script and style (by hash) and no network at all.
    """
    jwe.read_header(summary_jwe)  # shape check: five base64url parts, nothing else can be embedded
    script = "\n" + _static_text(VIEWER_SCRIPT)
    style = "\n" + _static_text(VIEWER_STYLE)
    if "</script" in script.lower() or "</style" in style.lower():
        raise CardError("viewer assets must not close their own element")
    csp = (
        f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
        "img-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'"
    )
    config = json.dumps({"mode": "offline"})
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{style}</style>
</head>
<body>
<main id="shl-app" data-shl-config="{html.escape(config)}">
<h1>{html.escape(title)}</h1>
<p class="shl-intro">This page holds an <strong>encrypted</strong> copy of an emergency medical summary.
Paste the emergency link (it starts with <code>shlink:/</code> or is printed in
<code>{LINK_FILE}</code> beside this file) or its 43-character key to read it. Nothing is sent anywhere.</p>
<form id="shl-key-form" class="shl-form" autocomplete="off">
<label>Emergency link or key <input id="shl-key" name="key" type="password" required spellcheck="false"></label>
<button type="submit">Show the summary</button>
</form>
<p id="shl-status" class="shl-status" role="status" aria-live="polite"></p>
<div id="shl-summary"></div>
</main>
<script type="application/jose" id="shl-offline-jwe">{summary_jwe}</script>
<script>{script}</script>
</body>
</html>
"""
