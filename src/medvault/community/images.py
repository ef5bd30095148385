"""Avatars: only small PNG, JPEG or WebP images are taken, and every one is decoded and re-encoded
(Pillow) so that nothing of the upload survives but its pixels: no EXIF (camera, GPS position,
time), no XMP or ICC text, no trailing bytes, no polyglot tricks."""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from medvault.community.errors import CommunityError

__all__ = ["MAX_BYTES", "MAX_SIDE", "OUTPUT_TYPE", "clean_image"]

MAX_BYTES = 2 * 1024 * 1024
# Refused before decoding: a small file can declare a huge canvas (a 1 KiB lossless 4096 x 4096
# WebP cost ~290 ms and 130 MB to decode). 2048 is plenty for a 256-pixel avatar.
MAX_SIDE = 2048
SIZE = 256
OUTPUT_TYPE = "image/png"
_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})


def clean_image(data: bytes) -> bytes:
    """The upload as a PNG of at most SIZE x SIZE pixels with no metadata, or a CommunityError."""
    if not data:
        raise CommunityError("choose an image file", location="avatar")
    if len(data) > MAX_BYTES:
        raise CommunityError("the image is larger than 2 MB", location="avatar")
    try:
        with Image.open(io.BytesIO(data), formats=sorted(_FORMATS)) as img:
            if img.format not in _FORMATS:
                raise CommunityError("the image must be PNG, JPEG or WebP", location="avatar")
            width, height = img.size
            if width < 1 or height < 1 or width > MAX_SIDE or height > MAX_SIDE:
                raise CommunityError("the image is too large (at most 2048 x 2048 pixels)", location="avatar")
            if img.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers SIZE: a
                # fraction of the memory and time, and the thumbnail is the same.
                img.draft(None, (SIZE, SIZE))
            img.load()
            upright = ImageOps.exif_transpose(img)  # keep the orientation the EXIF tag gave, then drop the tag
            upright.thumbnail((SIZE, SIZE))
            mode = "RGBA" if upright.mode in ("RGBA", "LA", "P", "PA") else "RGB"
            pixels = upright.convert(mode)
    except CommunityError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise CommunityError("the file is not a PNG, JPEG or WebP image", location="avatar") from None
    except Exception:  # noqa: BLE001
        # Pillow parsing a hostile file fails in ways that are not one list (a corrupt EXIF block
        # raises SyntaxError from exif_transpose; struct.error, IndexError, ... elsewhere): any
        # failure to decode is the uploader's bad file, a 400, never a 500.
        raise CommunityError("the file is not a PNG, JPEG or WebP image", location="avatar") from None
    # A fresh image holding only the pixels: no info dict, no EXIF, no text chunks survive.
    clean = Image.new(mode, pixels.size)
    clean.paste(pixels)
    out = io.BytesIO()
    clean.save(out, format="PNG", optimize=True)
    return out.getvalue()
