"""Building ``textDocument/inlineCompletion`` items from suggestion texts.

VS Code shows an item only when its ``insertText`` extends the text already in its range, so
the range starts at the beginning of the word at the cursor and the item re-includes the typed
part of the word. When the rest of the line is only what the editor auto-closed (brackets,
quotes, ``;``, ``:``) the range also covers it, so accepting does not leave a stray ``)``.
"""

from __future__ import annotations

from lsprotocol import types

from qwen_lsp.server.documents import Document

ACCEPT_COMMAND = "qwenLsp.accepted"
_AUTO_CLOSED = set(")]}>\"'`;:, \t")


def word_start(line: str, index: int) -> int:
    """Start of the identifier-like word that ends at ``index`` in ``line``."""
    start = index
    while start > 0 and (line[start - 1].isalnum() or line[start - 1] == "_"):
        start -= 1
    return start


def auto_closed_tail(rest_of_line: str) -> bool:
    """True when the text after the cursor looks auto-inserted (closers only)."""
    return bool(rest_of_line) and all(ch in _AUTO_CLOSED for ch in rest_of_line)


def replacement(doc: Document, offset: int, suggestion: str, *, cover_tail: bool) -> tuple[int, int, str]:
    """(start, end, text): the span to replace and the text that makes ``suggestion`` appear
    at ``offset``; the edit is equivalent to inserting ``suggestion`` at the cursor."""
    line = doc.position_at(offset, "utf-32").line
    line_start, line_end = doc.line_span(line)
    col = offset - line_start
    line_text = doc.text[line_start:line_end]
    start = line_start + word_start(line_text, col)
    end = offset
    tail = line_text[col:]
    text = doc.text[start:offset] + suggestion
    if cover_tail and auto_closed_tail(tail) and tail.strip():
        end = line_end
        text += tail
    return start, end, text


def inline_items(doc: Document, offset: int, suggestions: list[str], encoding: str) -> list[types.InlineCompletionItem]:
    """One inline item per suggestion, each with the accept command attached."""
    items = []
    for index, suggestion in enumerate(suggestions):
        start, end, text = replacement(doc, offset, suggestion, cover_tail=True)
        items.append(
            types.InlineCompletionItem(
                insert_text=text,
                range=types.Range(doc.position_at(start, encoding), doc.position_at(end, encoding)),
                command=types.Command(
                    title="Accept qwen-lsp suggestion",
                    command=ACCEPT_COMMAND,
                    arguments=[{"uri": doc.uri, "version": doc.version, "index": index, "text": suggestion}],
                ),
            )
        )
    return items
