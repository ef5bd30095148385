"""The emergency card (`emergency.card`): QR, wallet card PDF and flash-drive bundle.

QR codes are decoded by an independent reader (zbarimg), the PDF is read back by pypdf, and the
offline page's embedded JWE is decrypted by our `jwe.py`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pypdf import PdfReader

from medvault.emergency import card, jwe, shl
from medvault.emergency.errors import CardError, JweError, ShlPayloadError
from tests.emergency.card_support import ALERT, LABEL, encrypt, make_link, needs_data, reyna_summary, zbar_decode

BASE = "https://medvault.example.org"
VIEWER = f"{BASE}/shl/view"


def _link(key: bytes | None = None, **kwargs: str) -> str:
    return make_link(base=BASE, manifest_id="A" * 43, key=key or shl.new_key(), viewer=VIEWER, **kwargs)


def test_qr_png_decodes_to_the_exact_link(tmp_path: Path) -> None:
    link = _link()
    path = tmp_path / "qr.png"
    path.write_bytes(card.qr_png(link))
    assert path.read_bytes().startswith(b"\x89PNG")
    assert zbar_decode(path) == link
    assert link.startswith(VIEWER + "#shlink:/")


def test_qr_error_correction_is_at_least_m_and_boosted_when_free() -> None:
    code = card._qr(_link())
    assert code.error in {"M", "Q", "H"}
    assert not code.is_micro  # phone cameras do not read Micro QR
    # A short text fits a small symbol with room to spare: segno raises the level at no size cost.
    assert card._qr("shlink:/x").error in {"Q", "H"}


def test_qr_svg_is_an_svg_of_the_same_code() -> None:
    link = _link()
    svg = card.qr_svg(link, scale=1)
    root = ET.fromstring(svg)  # noqa: S314 - our own segno output, not untrusted input
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    size = card._qr(link).symbol_size(scale=1)
    assert (int(root.attrib["width"]), int(root.attrib["height"])) == size
    assert root.find("{http://www.w3.org/2000/svg}path") is not None


def test_qr_refuses_empty_text() -> None:
    with pytest.raises(CardError):
        card.qr_png("")


def _pdf_images(reader: PdfReader) -> list[bytes]:
    out = []
    for image in reader.pages[0].images:
        buf = io.BytesIO()
        image.image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def test_wallet_card_pdf_holds_the_qr_label_and_alerts(tmp_path: Path) -> None:
    link = _link()
    alerts = [ALERT, "Anaphylaxis to penicillin: carries an adrenaline auto-injector"]
    pdf = card.wallet_card_pdf(link_text=link, label=LABEL, alerts=alerts)
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    text = " ".join(reader.pages[0].extract_text().split())
    assert LABEL in text
    assert "Emergency medical information \u2014 scan with a phone camera" in text
    for alert in alerts:
        # The back wraps long alerts: compare with whitespace collapsed.
        assert " ".join(alert.split()) in text
    images = _pdf_images(reader)
    assert len(images) == 1
    path = tmp_path / "card-qr.png"
    path.write_bytes(images[0])
    assert zbar_decode(path) == link


def test_wallet_card_is_drawn_at_bank_card_size() -> None:
    pdf = card.wallet_card_pdf(link_text=_link(), label=LABEL, alerts=[])
    page = PdfReader(io.BytesIO(pdf)).pages[0]
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (595, 842)  # A4
    content = page.get_contents()
    assert content is not None
    data = content.get_data().decode("latin-1")
    card_w, card_h = 85.6 / 25.4 * 72, 54 / 25.4 * 72
    # The dashed fold line spans the card's width.
    fold = re.search(r"n ([\d.]+) ([\d.]+) m ([\d.]+) ([\d.]+) l S", data)
    assert fold is not None
    assert float(fold.group(3)) - float(fold.group(1)) == pytest.approx(card_w, abs=0.01)
    # The cut line (a rounded rectangle path) bounds front and back: one card wide, two cards high.
    cut = re.search(r"\nn\n(.*?)\nh\nS", data, flags=re.S)
    assert cut is not None
    points = [float(n) for n in re.findall(r"[\d.]+", cut.group(1))]
    xs, ys = points[0::2], points[1::2]
    assert max(xs) - min(xs) == pytest.approx(card_w, abs=0.01)
    assert max(ys) - min(ys) == pytest.approx(2 * card_h, abs=0.01)
    # The fold is halfway: front above, back below.
    assert float(fold.group(2)) == pytest.approx(min(ys) + card_h, abs=0.01)


@needs_data
def test_wallet_card_prints_nothing_the_patient_did_not_choose() -> None:
    summary = reyna_summary()
    pdf = card.wallet_card_pdf(link_text=_link(), label="My card", alerts=[ALERT])
    text = " ".join(PdfReader(io.BytesIO(pdf)).pages[0].extract_text().split())
    assert ALERT in text
    assert [c for c in summary.canaries if c in text] == [ALERT]


@pytest.mark.parametrize(
    ("label", "alerts"),
    [("", []), ("   ", []), ("x" * 81, []), ("ok", ["a"] * 9), ("ok", [""]), ("ok", ["x" * 201]), ("a\x07b", [])],
)
def test_wallet_card_refuses_bad_text(label: str, alerts: list[str]) -> None:
    with pytest.raises(CardError) as info:
        card.wallet_card_pdf(link_text=_link(), label=label, alerts=alerts)
    assert "\x07" not in info.value.message


def test_wallet_card_prints_accented_names_and_refuses_what_its_font_cannot() -> None:
    pdf = card.wallet_card_pdf(link_text=_link(), label="Zoë Ørsted-Müller", alerts=["Allergie à la pénicilline"])
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Zoë Ørsted-Müller" in text
    assert "Allergie à la pénicilline" in text
    # Neither DejaVu Sans nor the bundled Vera has CJK glyphs: refused, never printed as empty boxes.
    with pytest.raises(CardError, match="cannot print"):
        card.wallet_card_pdf(link_text=_link(), label="山田 花子", alerts=[])


def test_wallet_card_falls_back_to_the_font_reportlab_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine without fonts-dejavu still makes cards, with Bitstream Vera from inside reportlab.
    monkeypatch.setattr(
        card, "_FONT_CANDIDATES", (("/nonexistent/DejaVuSans.ttf", "/nonexistent/B.ttf"), *card._FONT_CANDIDATES[1:])
    )
    card._fonts.cache_clear()
    try:
        pdf = card.wallet_card_pdf(link_text=_link(), label="Zoë's card", alerts=[ALERT])
        reader = PdfReader(io.BytesIO(pdf))
        assert "Zoë's card" in reader.pages[0].extract_text()
        fonts = reader.pages[0]["/Resources"]["/Font"]
        assert any("Vera" in str(f.get_object()["/BaseFont"]) for f in fonts.values())
    finally:
        card._fonts.cache_clear()


def test_wallet_card_refuses_an_invalid_link() -> None:
    with pytest.raises(ShlPayloadError):
        card.wallet_card_pdf(link_text="https://example.org/not-a-link", label=LABEL, alerts=[])


@needs_data
def test_flash_drive_bundle_is_encrypted_and_decrypts_to_the_summary(tmp_path: Path) -> None:
    summary = reyna_summary()
    key = shl.new_key()
    link = _link(key)
    token = encrypt(summary, key)
    files = {f.name: f for f in card.flash_drive_bundle(link_text=link, summary_jwe=token, label="Emergency card")}
    assert set(files) == {"emergency-link.txt", "emergency-qr.png", "emergency.html"}
    assert files["emergency-link.txt"].content.decode("utf-8").strip() == link
    qr = tmp_path / "emergency-qr.png"
    qr.write_bytes(files["emergency-qr.png"].content)
    assert zbar_decode(qr) == link

    page = files["emergency.html"].content.decode("utf-8")
    for canary in summary.canaries:
        assert canary not in page, "plaintext of the summary in the offline page"
        assert canary.encode() not in files["emergency-qr.png"].content
    # The key is not in the page either: the person supplies it.
    assert shl.parse_shlink(link).key not in page
    embedded = re.search(r'<script type="application/jose" id="shl-offline-jwe">([^<]*)</script>', page)
    assert embedded is not None
    decrypted = jwe.decrypt_file(token=embedded.group(1), key=key)
    assert decrypted.content_type == "application/fhir+json"
    assert decrypted.json() == summary.bundle


@needs_data
def test_offline_page_csp_pins_its_inline_script_and_forbids_the_network() -> None:
    summary = reyna_summary()
    key = shl.new_key()
    page = card.offline_page(summary_jwe=encrypt(summary, key), title=LABEL)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp is not None
    policy = csp.group(1).replace("&#x27;", "'")
    assert "connect-src 'none'" in policy
    assert "default-src 'none'" in policy
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert len(scripts) == 1  # the viewer's own script, inlined
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    viewer_js = (Path(card.__file__).parents[1] / "web" / "static" / "shl-viewer.js").read_text(encoding="utf-8")
    assert scripts[0].strip() == viewer_js.strip()


@needs_data
def test_flash_drive_bundle_refuses_a_jwe_the_link_key_cannot_open() -> None:
    summary = reyna_summary()
    token = encrypt(summary, shl.new_key())
    with pytest.raises(JweError):
        card.flash_drive_bundle(link_text=_link(), summary_jwe=token)


def test_offline_page_refuses_anything_but_a_compact_jwe() -> None:
    with pytest.raises(JweError):
        card.offline_page(summary_jwe="</script><script>alert(1)</script>", title="x")


def test_the_viewer_script_has_no_channel_a_key_could_leak_through() -> None:
    # The key lives in a closure and goes only to crypto.subtle.importKey. A console line, persistent
    # storage or HTML injection would each be a way out (or in): none may appear in the script.
    script = card._static_text(card.VIEWER_SCRIPT)
    for banned in (
        "console.",
        "localStorage",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "eval(",
        "document.write",
    ):
        assert banned not in script, banned
    assert script.count("importKey(") == 1


def test_alerts_that_overflow_the_back_end_with_a_pointer_to_the_code() -> None:
    alerts = [f"Alert number {i}: " + "very long explanation of a blood-product notice " * 3 for i in range(8)]
    pdf = card.wallet_card_pdf(link_text=_link(), label=LABEL, alerts=alerts)
    text = " ".join(PdfReader(io.BytesIO(pdf)).pages[0].extract_text().split())
    assert "Alert number 0:" in text
    assert "Alert number 7:" not in text  # it did not fit ...
    assert "\u2026 see the full list by scanning the code" in text  # ... and the card says so
