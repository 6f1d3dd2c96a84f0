import zipfile
from pathlib import Path

import pytest

from lstmlm.data import epub
from lstmlm.data.epub import read_epub

CONTAINER = """<?xml version="1.0" encoding="UTF-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles>
    <rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
  </rootfiles>
</container>
"""

# The spine order (intro, then "a_chapter") differs from the alphabetical file order.
OPF = """<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Test</dc:title></metadata>
  <manifest>
    <item id="ch2" href="text/a_chapter.xhtml" media-type="application/xhtml+xml"/>
    <item id="css" href="style.css" media-type="text/css"/>
    <item id="ch1" href="text/z%20intro.xhtml" media-type="application/xhtml+xml"/>
    <item id="img" href="cover.png" media-type="image/png"/>
  </manifest>
  <spine>
    <itemref idref="ch1"/>
    <itemref idref="img"/>
    <itemref idref="ch2"/>
  </spine>
</package>
"""

INTRO = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
  <title>Head title must not appear</title>
  <style>p { color: red; }</style>
</head>
<body>
  <h1>Chapter   One</h1>
  <p>It was a <em>dark</em> and
     stormy&#160;night &amp; the rain fell&mdash;in &lt;torrents&gt;.</p>
  <script type="text/javascript">var hidden = "script text";</script>
  <div><p>Nested	paragraph.</p></div>
  <p>Line one<br/>Line two</p>
  <p>&#160;</p>
  <p>After<br/><br/><br/><br/>gap</p>
</body>
</html>
"""

CHAPTER = """<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml">
<head><title>x</title></head>
<body>
  <section><h2>Chapter Two</h2>
  <ul><li>first item</li><li>second <b>bold</b> item</li></ul>
  <blockquote>Quoted &quot;words&quot; &#x263A;</blockquote>
  <table><tr><td>cell a</td><td>cell b</td></tr></table>
  </section>
</body>
</html>
"""

EXPECTED = (
    "Chapter One\n"
    "It was a dark and stormy night & the rain fell\u2014in <torrents>.\n"
    "Nested paragraph.\n"
    "Line one\n"
    "Line two\n"
    "After\n"
    "\n"
    "gap\n"
    "\n"
    "Chapter Two\n"
    "first item\n"
    "second bold item\n"
    'Quoted "words" \u263a\n'
    "cell a\n"
    "cell b\n"
)


def make_epub(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def good_members() -> dict[str, str | bytes]:
    return {
        "META-INF/container.xml": CONTAINER,
        "OEBPS/content.opf": OPF,
        "OEBPS/style.css": "p { margin: 0 }",
        "OEBPS/text/z intro.xhtml": INTRO,
        "OEBPS/text/a_chapter.xhtml": CHAPTER,
        "OEBPS/cover.png": b"\x89PNG\r\n\x1a\n",
    }


def test_reading_order_and_clean_text(tmp_path):
    text = read_epub(make_epub(tmp_path / "book.epub", good_members()))
    assert text == EXPECTED
    assert "script text" not in text and "color" not in text and "Head title" not in text
    assert text.index("Chapter One") < text.index("Chapter Two")


def test_accepts_str_path(tmp_path):
    path = make_epub(tmp_path / "book.epub", good_members())
    assert read_epub(str(path)) == EXPECTED


def test_pre_keeps_line_breaks(tmp_path):
    members = good_members()
    members["OEBPS/text/a_chapter.xhtml"] = "<html><body><pre>a  b\nc</pre></body></html>"
    text = read_epub(make_epub(tmp_path / "b.epub", members))
    assert text.endswith("\n\na b\nc\n")


def test_latin1_chapter_with_xml_declaration(tmp_path):
    members = good_members()
    members["OEBPS/text/a_chapter.xhtml"] = (
        '<?xml version="1.0" encoding="iso-8859-1"?><html><body><p>caf\xe9</p></body></html>'
    ).encode("latin-1")
    assert read_epub(make_epub(tmp_path / "b.epub", members)).endswith("\n\ncafé\n")


def assert_invalid(path: Path, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        read_epub(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not a valid EPUB (")
    assert reason in msg and "\n" not in msg


def test_not_a_zip(tmp_path):
    path = tmp_path / "fake.epub"
    path.write_text("just text\n")
    assert_invalid(path, "not a zip")


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_epub(tmp_path / "missing.epub")


def test_no_container(tmp_path):
    members = good_members()
    del members["META-INF/container.xml"]
    assert_invalid(make_epub(tmp_path / "b.epub", members), "container.xml")


def test_container_without_rootfile(tmp_path):
    members = good_members()
    members["META-INF/container.xml"] = "<container><rootfiles/></container>"
    assert_invalid(make_epub(tmp_path / "b.epub", members), "no OPF")


def test_missing_opf(tmp_path):
    members = good_members()
    del members["OEBPS/content.opf"]
    assert_invalid(make_epub(tmp_path / "b.epub", members), "OEBPS/content.opf")


def test_malformed_opf(tmp_path):
    members = good_members()
    members["OEBPS/content.opf"] = "<package><manifest>"
    assert_invalid(make_epub(tmp_path / "b.epub", members), "not well-formed XML")


def test_empty_spine(tmp_path):
    members = good_members()
    members["OEBPS/content.opf"] = OPF.replace('<itemref idref="ch1"/>', "").replace(
        '<itemref idref="ch2"/>', ""
    )
    assert_invalid(make_epub(tmp_path / "b.epub", members), "no readable chapters")


def test_chapters_without_text(tmp_path):
    members = good_members()
    members["OEBPS/text/z intro.xhtml"] = "<html><head><title>t</title></head><body/></html>"
    members["OEBPS/text/a_chapter.xhtml"] = "<html><body><script>x()</script></body></html>"
    assert_invalid(make_epub(tmp_path / "b.epub", members), "no text")


def test_spine_chapter_missing_from_archive(tmp_path):
    members = good_members()
    del members["OEBPS/text/a_chapter.xhtml"]
    assert_invalid(make_epub(tmp_path / "b.epub", members), "missing member")


def test_oversized_member_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(epub, "MAX_MEMBER_BYTES", 1000)
    members = good_members()
    members["OEBPS/text/a_chapter.xhtml"] = "<p>" + "x" * 5000 + "</p>"
    assert_invalid(make_epub(tmp_path / "b.epub", members), "too large")


def spine_members(itemrefs: str, chapters: dict[str, str | bytes]) -> dict[str, str | bytes]:
    """An EPUB whose manifest holds `chapters` (id = file stem) and whose spine is `itemrefs`."""
    items = "".join(
        f'<item id="{n.split(".")[0]}" href="{n}" media-type="application/xhtml+xml"/>'
        for n in chapters
    )
    opf = (
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0"><manifest>'
        f"{items}</manifest><spine>{itemrefs}</spine></package>"
    )
    return {
        "META-INF/container.xml": CONTAINER,
        "OEBPS/content.opf": opf,
        **{f"OEBPS/{n}": body for n, body in chapters.items()},
    }


def page(text: str) -> str:
    return f"<html><body><p>{text}</p></body></html>"


def test_non_linear_spine_items_are_not_body_text(tmp_path):
    members = spine_members(
        '<itemref idref="toc" linear="no"/><itemref idref="one"/><itemref idref="notes" '
        'linear="no"/><itemref idref="two" linear="yes"/>',
        {"toc.xhtml": page("Contents"), "one.xhtml": page("body one"),
         "notes.xhtml": page("note 1"), "two.xhtml": page("body two")},
    )  # fmt: skip
    assert read_epub(make_epub(tmp_path / "b.epub", members)) == "body one\n\nbody two\n"
    only_aside = spine_members('<itemref idref="a" linear="no"/>', {"a.xhtml": page("all")})
    assert read_epub(make_epub(tmp_path / "c.epub", only_aside)) == "all\n"


def test_repeated_spine_entries_are_refused(tmp_path):
    refs = '<itemref idref="one"/>' * 400
    path = make_epub(tmp_path / "b.epub", spine_members(refs, {"one.xhtml": page("x")}))
    with pytest.raises(ValueError, match=r"spine lists OEBPS/one.xhtml more than once"):
        read_epub(path)


def test_total_text_cap_names_itself_and_how_to_raise_it(tmp_path, monkeypatch):
    chapters = {f"c{i}.xhtml": page("word " * 60_000) for i in range(5)}  # 300 kB each
    refs = "".join(f'<itemref idref="c{i}"/>' for i in range(5))
    path = make_epub(tmp_path / "b.epub", spine_members(refs, chapters))
    monkeypatch.setenv("LSTMLM_EPUB_MAX_MB", "1")
    with pytest.raises(ValueError) as info:
        read_epub(path)
    msg = str(info.value)
    assert "more than the 1 MB" in msg and "set LSTMLM_EPUB_MAX_MB=MB to raise" in msg
    assert "\n" not in msg
    monkeypatch.setenv("LSTMLM_EPUB_MAX_MB", "2")
    assert read_epub(path).count("word") == 300_000


ENCRYPTION = """<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
  xmlns:enc="http://www.w3.org/2001/04/xmlenc#">
  <enc:EncryptedData><enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
  <enc:CipherData><enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData>
</encryption>"""


def test_drm_epub_is_refused_in_one_line(tmp_path):
    members = spine_members('<itemref idref="one"/>', {"one.xhtml": bytes(range(256)) * 40})
    members["META-INF/encryption.xml"] = ENCRYPTION.format(uri="OEBPS/one.xhtml")
    with pytest.raises(ValueError, match=r"b.epub: encrypted \(DRM\) EPUB"):
        read_epub(make_epub(tmp_path / "b.epub", members))
    fonts = spine_members('<itemref idref="one"/>', {"one.xhtml": page("readable")})
    fonts["META-INF/encryption.xml"] = ENCRYPTION.format(uri="OEBPS/font.otf")  # obfuscation
    assert read_epub(make_epub(tmp_path / "f.epub", fonts)) == "readable\n"


@pytest.mark.parametrize(
    "body",
    [page("a\x00b" * 50).encode(), b"<html><body><p>" + bytes(range(128, 256)) * 8 + b"</p>"],
)
def test_binary_chapters_are_refused_like_binary_text(tmp_path, body):
    members = spine_members('<itemref idref="one"/>', {"one.xhtml": body})
    with pytest.raises(ValueError, match=r"chapter OEBPS/one.xhtml looks like binary"):
        read_epub(make_epub(tmp_path / "b.epub", members))


def test_an_odd_declared_codec_names_the_file(tmp_path):
    body = '<?xml version="1.0" encoding="idna"?><html><body><p>\u00e9t\u00e9</p></body></html>'
    members = spine_members('<itemref idref="one"/>', {"one.xhtml": body.encode("utf-8")})
    with pytest.raises(ValueError, match=r"b.epub: chapter OEBPS/one.xhtml declares encoding"):
        read_epub(make_epub(tmp_path / "b.epub", members))
    rot = '<?xml version="1.0" encoding="rot13"?><html><body><p>plain</p></body></html>'
    members = spine_members('<itemref idref="one"/>', {"one.xhtml": rot.encode()})
    assert read_epub(make_epub(tmp_path / "r.epub", members)) == "plain\n"  # not a text codec
