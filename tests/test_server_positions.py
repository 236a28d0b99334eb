"""Offset conversions in every encoding, with CJK, emoji, combining marks and CRLF."""

from __future__ import annotations

import pytest
from lsprotocol import types

from qwen_lsp.server.documents import Document, PositionError
from qwen_lsp.server.positions import UTF8, UTF16, UTF32, column_to_index, index_to_column, text_units

LINE = "a漢😀e\u0301b"  # ASCII, CJK (BMP, 3 utf-8 bytes), emoji (astral), e + combining acute


@pytest.mark.parametrize(
    "encoding, columns",
    [
        (UTF32, [0, 1, 2, 3, 4, 5, 6]),
        (UTF16, [0, 1, 2, 4, 5, 6, 7]),
        (UTF8, [0, 1, 4, 8, 9, 11, 12]),
    ],
)
def test_column_index_round_trip(encoding, columns):
    for index, column in enumerate(columns):
        assert index_to_column(LINE, index, encoding) == column
        assert column_to_index(LINE, column, encoding) == index
    assert text_units(LINE, encoding) == columns[-1]


@pytest.mark.parametrize("encoding, inside", [(UTF16, 3), (UTF8, 2), (UTF8, 3), (UTF8, 5)])
def test_column_inside_a_character_snaps_to_its_start(encoding, inside):
    index = column_to_index(LINE, inside, encoding)
    assert index_to_column(LINE, index, encoding) < inside


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_column_past_end_clamps(encoding):
    assert column_to_index(LINE, 10_000, encoding) == len(LINE)
    assert column_to_index(LINE, -3, encoding) == 0


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_document_positions_across_lines(encoding):
    doc = Document("file:///x", "python", 1, "第一\r\n😀 = 1\n\ncafe\u0301\rend")
    for offset in range(len(doc.text) + 1):
        if offset and doc.text[offset - 1] == "\r" and doc.text[offset:offset + 1] == "\n":
            continue  # between \r and \n is not a position
        pos = doc.position_at(offset, encoding)
        assert doc.offset_at(pos, encoding) == offset
    assert doc.line_count == 5
    assert doc.line_text(1) == "😀 = 1"
    assert doc.line_text(3) == "cafe\u0301"


def test_line_past_end_is_an_error_but_clamped_for_edits():
    doc = Document("file:///x", "python", 1, "one\ntwo")
    with pytest.raises(PositionError):
        doc.offset_at(types.Position(7, 0), UTF16)
    assert doc.offset_at(types.Position(7, 0), UTF16, clamp=True) == len(doc.text)


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_incremental_edits_with_non_ascii(encoding):
    doc = Document("file:///x", "python", 1, "x = '😀'\ny = '漢字'\n")
    line0 = doc.line_text(0)
    col = index_to_column(line0, line0.index("'") + 2, encoding)  # after the emoji
    doc.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(0, col), types.Position(0, col)), text="é"), encoding)
    assert doc.line_text(0) == "x = '😀é'"
    line1 = doc.line_text(1)
    start = index_to_column(line1, line1.index("漢"), encoding)
    end = index_to_column(line1, line1.index("字") + 1, encoding)
    doc.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(1, start), types.Position(1, end)), text="ok\nz = 1"), encoding)
    assert doc.text == "x = '😀é'\ny = 'ok\nz = 1'\n"
    doc.apply_change(types.TextDocumentContentChangeWholeDocument(text="new"), encoding)
    assert doc.text == "new" and doc.line_count == 1
