import os
import zipfile
from pathlib import Path

import pytest

from lstmlm.data.readers import normalize_text, read_text, split_text


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- read_text: files ---------------------------------------------------------------------


def test_reads_utf8_file(tmp_path):
    p = write(tmp_path / "a.txt", "héllo wörld\nzweite Zeile\n".encode())
    assert read_text(p) == "héllo wörld\nzweite Zeile\n"
    assert read_text(str(p)) == "héllo wörld\nzweite Zeile\n"


def test_other_extensions_are_text(tmp_path):
    p = write(tmp_path / "notes.md", b"# title\nbody\n")
    assert read_text(p) == "# title\nbody\n"


def test_strips_bom_and_normalizes_newlines(tmp_path):
    p = write(tmp_path / "a.txt", b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    assert read_text(p) == "one\ntwo\nthree\n"


def test_lowercase(tmp_path):
    p = write(tmp_path / "a.txt", b"The Cat SAT\n")
    assert read_text(p, lowercase=True) == "the cat sat\n"
    assert read_text(p) == "The Cat SAT\n"


def test_normalize_text_is_what_read_text_does_to_a_file(tmp_path):
    raw = "The Cat\r\nSAT\rdown\n"
    p = write(tmp_path / "a.txt", raw.encode())
    assert normalize_text(raw) == read_text(p) == "The Cat\nSAT\ndown\n"
    assert normalize_text(raw, lowercase=True) == read_text(p, lowercase=True)
    assert normalize_text(raw, lowercase=True) == "the cat\nsat\ndown\n"


def test_missing_path(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.txt: no such file or folder"):
        read_text(tmp_path / "nope.txt")


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n  "])
def test_empty_or_blank_file(tmp_path, data):
    p = write(tmp_path / "e.txt", data)
    with pytest.raises(ValueError, match="empty"):
        read_text(p)


def test_binary_file(tmp_path):
    p = write(tmp_path / "model.bin", b"abc\x00\x01\x02def")
    with pytest.raises(ValueError, match=r"model\.bin: .*binary"):
        read_text(p)


def test_non_utf8_reports_offset(tmp_path):
    p = write(tmp_path / "latin1.txt", "abc café".encode("latin-1"))
    with pytest.raises(ValueError) as info:
        read_text(p)
    assert str(info.value) == f"{p}: file is not UTF-8 text (invalid byte at offset 7)"


def test_non_utf8_offset_counts_bom(tmp_path):
    p = write(tmp_path / "x.txt", b"\xef\xbb\xbfab\xffc")
    with pytest.raises(ValueError, match="offset 5"):
        read_text(p)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_unreadable_file(tmp_path):
    p = write(tmp_path / "secret.txt", b"text\n")
    p.chmod(0)
    try:
        with pytest.raises(ValueError, match="cannot read"):
            read_text(p)
    finally:
        p.chmod(0o600)


def test_read_error_is_reported(tmp_path, monkeypatch):
    # Simulates an unreadable file even when the tests run as root.
    p = write(tmp_path / "a.txt", b"text\n")

    def deny(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(ValueError) as info:
        read_text(p)
    assert str(info.value) == f"{p}: cannot read file (Permission denied)"


def test_folder_list_error_is_reported(tmp_path, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()

    def deny(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(os, "scandir", deny)  # what os.walk lists folders with
    with pytest.raises(ValueError, match=r"d: cannot read folder \(Permission denied\)"):
        read_text(d)


def test_unreadable_subfolder_is_a_warning(tmp_path, monkeypatch, caplog):
    root = tmp_path / "books"
    write(root / "a.txt", b"kept\n")
    write(root / "locked" / "b.txt", b"left out\n")
    scandir = os.scandir

    def deny_locked(path="."):
        if Path(path).name == "locked":  # simulated: root ignores permissions
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", deny_locked)
    with caplog.at_level("WARNING", logger="lstmlm"):
        assert read_text(root) == "kept\n"
    assert f"{root / 'locked'}: cannot read folder (Permission denied)" in caplog.text


def test_non_regular_files_are_refused_before_reading(tmp_path):
    for path in ("/dev/zero", "/dev/null"):
        with pytest.raises(ValueError, match="not a regular file"):
            read_text(path)
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    with pytest.raises(ValueError, match=f"^{fifo}: not a regular file"):
        read_text(fifo)
    fifo_epub = tmp_path / "book.epub"
    os.mkfifo(fifo_epub)
    with pytest.raises(ValueError, match="not a regular file"):
        read_text(fifo_epub)


def test_binary_content_is_found_in_the_first_chunk(tmp_path, monkeypatch):
    from lstmlm.data import readers

    p = write(tmp_path / "big.txt", b"\x00" + b"x" * (3 * readers.CHUNK))
    reads = []
    real_open = Path.open

    def counting_open(self, *a, **kw):
        f = real_open(self, *a, **kw)
        read = f.read
        f.read = lambda n=-1: reads.append(n) or read(n)  # noqa: B023
        return f

    monkeypatch.setattr(Path, "open", counting_open)
    with pytest.raises(ValueError, match="binary"):
        read_text(p)
    assert reads == [readers.CHUNK]  # bounded reads, and only the first one


def test_a_proc_file_is_read_to_its_end(tmp_path):
    assert "Name:" in read_text("/proc/self/status")  # its stat size is 0


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom_is_read_as_utf16(tmp_path, codec):
    bom = b"\xff\xfe" if codec.endswith("le") else b"\xfe\xff"
    p = write(tmp_path / "u.txt", bom + "héllo wörld\r\nzwei\n".encode(codec))
    assert read_text(p) == "héllo wörld\nzwei\n"
    bad = write(tmp_path / "odd.txt", b"\xff\xfe" + "ab".encode("utf-16-le") + b"\x00")
    with pytest.raises(ValueError, match="starts as UTF-16 but is not UTF-16 text"):
        read_text(bad)


def test_messages_are_one_line(tmp_path):
    cases = [
        tmp_path / "missing.txt",
        write(tmp_path / "e.txt", b""),
        write(tmp_path / "b.txt", b"\x00"),
        write(tmp_path / "l.txt", b"\xe9"),
    ]
    for path in cases:
        with pytest.raises(ValueError) as info:
            read_text(path)
        assert "\n" not in str(info.value)


# --- read_text: folders -------------------------------------------------------------------


def test_folder_recursive_sorted_by_relative_path(tmp_path):
    root = tmp_path / "books"
    write(root / "b.txt", b"second\n")
    write(root / "a" / "z.txt", b"first")  # no trailing newline: a "\n" is inserted
    write(root / "c" / "d" / "e.txt", b"third\n")
    write(root / "ignored.md", b"not read\n")
    write(root / "B.TXT", b"upper-case suffix\n")
    text = read_text(root)
    assert text == "upper-case suffix\nfirst\nsecond\nthird\n"


def test_folder_without_txt(tmp_path):
    write(tmp_path / "d" / "x.md", b"hello\n")
    with pytest.raises(ValueError, match="folder contains no .txt files"):
        read_text(tmp_path / "d")


def test_folder_with_only_empty_files(tmp_path):
    write(tmp_path / "d" / "a.txt", b"")
    write(tmp_path / "d" / "b.txt", b"\n")
    with pytest.raises(ValueError, match="empty"):
        read_text(tmp_path / "d")


def test_folder_error_names_bad_member(tmp_path):
    write(tmp_path / "d" / "good.txt", b"ok\n")
    bad = write(tmp_path / "d" / "bad.txt", b"caf\xe9\n")
    with pytest.raises(ValueError, match=f"^{bad}: file is not UTF-8"):
        read_text(tmp_path / "d")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_unreadable_folder(tmp_path):
    d = tmp_path / "locked"
    write(d / "a.txt", b"x\n")
    d.chmod(0)
    try:
        with pytest.raises(ValueError, match="cannot read folder"):
            read_text(d)
    finally:
        d.chmod(0o700)


def test_epub_dispatch(tmp_path):
    p = tmp_path / "book.EPUB"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr(
            "META-INF/container.xml",
            '<container><rootfiles><rootfile full-path="c.opf"/></rootfiles></container>',
        )
        zf.writestr(
            "c.opf",
            '<package><manifest><item id="a" href="a.xhtml" media-type="application/xhtml+xml"/>'
            '</manifest><spine><itemref idref="a"/></spine></package>',
        )
        zf.writestr("a.xhtml", "<html><body><p>Call me Ishmael.</p></body></html>")
    assert read_text(p, lowercase=True) == "call me ishmael.\n"


# --- split_text ---------------------------------------------------------------------------


def test_split_by_lines_default_fractions():
    lines = [f"line {i}\n" for i in range(100)]
    train, valid, test = split_text("".join(lines))
    assert train == "".join(lines[:90])
    assert valid == "".join(lines[90:95])
    assert test == "".join(lines[95:])


def test_split_is_lossless_without_trailing_newline():
    text = "\n".join(f"w{i}" for i in range(20))
    parts = split_text(text, (0.5, 0.25, 0.25))
    assert "".join(parts) == text
    assert parts[0].count("\n") == 10
    assert parts[2].endswith("w19")


def test_split_gives_each_part_a_line_when_small():
    train, valid, test = split_text("a\nb\nc\n")
    assert (train, valid, test) == ("a\n", "b\n", "c\n")


def test_split_is_deterministic():
    text = "".join(f"{i}\n" for i in range(37))
    assert split_text(text) == split_text(text)


@pytest.mark.parametrize("text, n", [("only one line\n", 1), ("two\nlines", 2), ("", 0)])
def test_split_too_few_lines(text, n):
    with pytest.raises(ValueError) as info:
        split_text(text)
    msg = str(info.value)
    assert f"only {n} line" in msg and "valid and test files" in msg and "\n" not in msg


def test_split_blank_part():
    with pytest.raises(ValueError, match="valid part would be blank"):
        split_text("a\n\nb\n")


@pytest.mark.parametrize(
    "fractions", [(0.9, 0.1, 0.0), (0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (0.8, 0.1, float("nan"))]
)
def test_split_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_text("a\nb\nc\nd\n", fractions)
