"""``textDocument/completion`` items for editors without inline completion.

The suggestion becomes one item whose ``textEdit`` replaces the word typed so far with that
word plus the whole (possibly multi-line) suggestion. ``filterText`` is the same text, so the
client's fuzzy filter keeps the item while the user keeps typing it; the list is
``isIncomplete`` so the client asks again instead of filtering a stale list forever.
"""

from __future__ import annotations

from lsprotocol import types

from qwen_lsp.server.documents import Document
from qwen_lsp.server.inline import ACCEPT_COMMAND, replacement

_LABEL_CHARS = 40


def label_for(text: str) -> str:
    """A short one-line label: the first non-blank line, cut to a few dozen characters."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), text.strip())
    more = "…" if len(first) > _LABEL_CHARS or "\n" in text.strip() else ""
    return first[:_LABEL_CHARS] + more


def completion_list(doc: Document, offset: int, suggestions: list[str], encoding: str, language_id: str) -> types.CompletionList:
    items = []
    for index, suggestion in enumerate(suggestions):
        start, end, text = replacement(doc, offset, suggestion, cover_tail=False)
        rng = types.Range(doc.position_at(start, encoding), doc.position_at(end, encoding))
        items.append(
            types.CompletionItem(
                label=label_for(text),
                kind=types.CompletionItemKind.Text,
                detail="qwen-lsp",
                documentation=types.MarkupContent(
                    kind=types.MarkupKind.Markdown, value=f"```{language_id}\n{text}\n```"
                ),
                sort_text=f"0000{index}",
                filter_text=text,
                preselect=index == 0,
                insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=rng, new_text=text),
                command=types.Command(
                    title="Accept qwen-lsp suggestion",
                    command=ACCEPT_COMMAND,
                    arguments=[{"uri": doc.uri, "version": doc.version, "index": index, "text": suggestion}],
                ),
            )
        )
    return types.CompletionList(is_incomplete=True, items=items)
