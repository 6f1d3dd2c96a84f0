"""Extract the plain text of an EPUB book with the standard library only.

META-INF/container.xml names the OPF package file; its manifest maps ids to files and
its spine lists them in reading order. Each XHTML chapter is turned into text: one line
per block element (paragraph, heading, list item, ...), chapters separated by a blank line.
"""

from __future__ import annotations

import codecs
import math
import os
import posixpath
import re
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

MAX_MEMBER_BYTES = 200 * 1024 * 1024  # refuse members that inflate beyond this (zip bombs)
MAX_TEXT_MB = 256  # the chapters read from one EPUB, in all (a spine may list many)
CAP_ENV = "LSTMLM_EPUB_MAX_MB"

_HTML_TYPES = {"application/xhtml+xml", "text/html"}
_HTML_SUFFIXES = (".xhtml", ".html", ".htm")
_SKIP = {"script", "style", "head", "template"}
_BLOCK = {
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "ul",
}  # fmt: skip
_SPACES = re.compile(r"[ \t\f\v\xa0]+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]*encoding=["']([A-Za-z0-9._-]+)["']""")


def read_epub(path: str | Path) -> str:
    """Return the text of the EPUB at ``path``, chapters in spine (reading) order."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError as e:
        raise ValueError(f"{path}: no such file") from e
    except OSError as e:
        raise ValueError(f"{path}: cannot read file ({e.strerror or e})") from e
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path}: not a valid EPUB (not a zip archive)") from e
    with zf:
        names = _spine(zf, path)
        _refuse_encrypted(zf, path, names)
        chapters = []
        total, cap = 0, max_text_bytes()
        for name in names:
            data = _read(zf, path, name)
            total += len(data)
            if total > cap:  # checked before the (slow) parse of each chapter
                raise ValueError(
                    f"{path}: its chapters hold more than the {cap >> 20} MB read from one "
                    f"EPUB; set {CAP_ENV}=MB to raise the cap"
                )
            chapters.append(_chapter_text(_decode(data, path, name)))
    text = "\n\n".join(c for c in chapters if c)
    if not text:
        raise ValueError(f"{path}: not a valid EPUB (its chapters contain no text)")
    return text + "\n"


def max_text_bytes() -> int:
    """The most chapter bytes read from one EPUB: $LSTMLM_EPUB_MAX_MB, else the default."""
    value = os.environ.get(CAP_ENV, "")
    try:
        mb = float(value) if value else MAX_TEXT_MB
    except ValueError:
        raise ValueError(f"{CAP_ENV} must be a number of MB, got {value!r}") from None
    if not (mb > 0 and math.isfinite(mb)):
        raise ValueError(f"{CAP_ENV} must be a positive number of MB, got {value!r}")
    return int(mb * (1 << 20))


def _refuse_encrypted(zf: zipfile.ZipFile, path: str | Path, chapters: list[str]) -> None:
    """ValueError when META-INF/encryption.xml encrypts a chapter (DRM); obfuscated fonts
    alone (the EPUB font mangling) do not stop the text being read."""
    if "META-INF/encryption.xml" not in zf.namelist():
        return
    drm = ValueError(f"{path}: encrypted (DRM) EPUB: its chapters cannot be read as text")
    try:
        root = ElementTree.fromstring(_read(zf, path, "META-INF/encryption.xml"))
    except ElementTree.ParseError:
        raise drm from None
    encrypted = {
        posixpath.normpath(unquote(e.get("URI", "")))
        for e in root.iter()
        if _local(e.tag) == "CipherReference"
    }
    if encrypted & set(chapters):
        raise drm


def _invalid(path: str | Path, why: str) -> ValueError:
    return ValueError(f"{path}: not a valid EPUB ({why})")


def _read(zf: zipfile.ZipFile, path: str | Path, name: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise _invalid(path, f"missing member {name}") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise _invalid(path, f"member {name} is too large when uncompressed")
    try:
        with zf.open(info) as f:
            data = f.read(MAX_MEMBER_BYTES + 1)  # the declared size may lie
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as e:
        raise _invalid(path, f"cannot read member {name}: {e}") from e
    if len(data) > MAX_MEMBER_BYTES:
        raise _invalid(path, f"member {name} is too large when uncompressed")
    return data


def _xml(zf: zipfile.ZipFile, path: str | Path, name: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(_read(zf, path, name))
    except ElementTree.ParseError as e:
        raise _invalid(path, f"{name} is not well-formed XML: {e}") from e


def _local(tag: str) -> str:
    """Tag name without its "{namespace}" prefix."""
    return tag.rsplit("}", 1)[-1]


def _spine(zf: zipfile.ZipFile, path: str | Path) -> list[str]:
    """Archive names of the spine's (X)HTML documents, in reading order."""
    if "META-INF/container.xml" not in zf.namelist():
        raise _invalid(path, "no META-INF/container.xml")
    container = _xml(zf, path, "META-INF/container.xml")
    rootfiles = [e for e in container.iter() if _local(e.tag) == "rootfile"]
    opf_names = [name for e in rootfiles if (name := e.get("full-path"))]
    if not opf_names:
        raise _invalid(path, "container.xml names no OPF package file")
    opf_name = opf_names[0]
    opf = _xml(zf, path, opf_name)
    base = posixpath.dirname(opf_name)

    manifest: dict[str, tuple[str, str]] = {}
    for item in opf.iter():
        if _local(item.tag) == "item" and item.get("id") and item.get("href"):
            href = unquote(item.get("href", "").split("#", 1)[0])
            name = posixpath.normpath(posixpath.join(base, href))
            manifest[item.get("id", "")] = (name, item.get("media-type", ""))

    names: list[str] = []
    aside: list[str] = []  # linear="no": notes, tables of contents, not the body text
    for ref in opf.iter():
        if _local(ref.tag) != "itemref" or ref.get("idref") not in manifest:
            continue
        name, media_type = manifest[ref.get("idref", "")]
        if name in names or name in aside:
            raise _invalid(path, f"its spine lists {name} more than once")
        if media_type in _HTML_TYPES or name.lower().endswith(_HTML_SUFFIXES):
            (aside if ref.get("linear", "yes").strip() == "no" else names).append(name)
    if not names:
        names = aside  # a book of only auxiliary items: read them rather than nothing
    if not names:
        raise _invalid(path, "its spine lists no readable chapters")
    return names


def _decode(data: bytes, path: str | Path, name: str) -> str:
    """Decode a chapter: BOM, then the XML declaration's encoding, else UTF-8; ValueError
    naming the file for an encoding that is not a text codec, or for content that is not
    text (NUL characters, or mostly undecodable bytes: binary or encrypted)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    elif data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
    else:
        match = _XML_ENCODING.match(data)
        encoding = match.group(1).decode("ascii") if match else "utf-8"
        try:
            if not codecs.lookup(encoding)._is_text_encoding:  # rot13, base64, ...
                raise LookupError(encoding)
            text = data.decode(encoding, errors="replace")
        except LookupError:
            text = data.decode("utf-8", errors="replace")  # an unknown name: the default
        except (UnicodeError, ValueError, TypeError) as e:  # idna, punycode, ...: no errors=
            raise ValueError(
                f"{path}: chapter {name} declares encoding {encoding!r}, which cannot "
                f"decode it ({type(e).__name__})"
            ) from None
    bad = text.count("\ufffd")
    if "\x00" in text or (len(text) >= 64 and bad > 0.25 * len(text)):
        raise ValueError(
            f"{path}: chapter {name} looks like binary or encrypted data (NUL characters or "
            "undecodable bytes), not text"
        )
    return text


def _chapter_text(markup: str) -> str:
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    lines = [_SPACES.sub(" ", line).strip() for line in parser.lines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")


class _TextParser(HTMLParser):
    """Collects text; block elements end the current line, <br> forces a line break."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities arrive decoded in handle_data
        self._lines: list[str] = []
        self._buf: list[str] = []
        self._skip = 0  # depth inside <script>/<style>/<head>
        self._pre = 0  # depth inside <pre>, where source newlines are kept

    def lines(self) -> list[str]:
        self._flush(force=False)
        return self._lines

    def _flush(self, *, force: bool) -> None:
        line = "".join(self._buf)
        if force or line.strip():
            self._lines.append(line)
        self._buf = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "body":
            self._skip = 0  # an unclosed <head> in sloppy HTML ends here
        elif self._skip:
            return
        elif tag == "br":
            self._flush(force=True)
        elif tag in _BLOCK:
            self._flush(force=False)
            self._pre += tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(self._skip - 1, 0)
        elif not self._skip and tag in _BLOCK:
            self._flush(force=False)
            if tag == "pre":
                self._pre = max(self._pre - 1, 0)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # Self-closing forms such as <br/> or <script/>: open and close at once.
        if tag == "br" and not self._skip:
            self._flush(force=True)
        elif tag in _BLOCK and not self._skip:
            self._flush(force=False)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            # Outside <pre>, source line breaks are just spaces; lines come from markup.
            self._buf.append(data.replace("\r", " ").replace("\n", " "))
            return
        first, *rest = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buf.append(first)
        for line in rest:
            self._flush(force=True)
            self._buf.append(line)
