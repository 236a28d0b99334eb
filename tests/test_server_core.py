"""The server's plain core: settings, debounce, typed-through cache, items, FIM trimming."""

from __future__ import annotations

from lsprotocol import types

from qwen_lsp.server.completion_cache import CompletionCache
from qwen_lsp.server.completion_items import completion_list, label_for
from qwen_lsp.server.debounce import AdaptiveDebounce
from qwen_lsp.server.documents import Document
from qwen_lsp.server.inline import inline_items
from qwen_lsp.server.positions import UTF16
from qwen_lsp.server.settings import Settings, merge_settings


def test_settings_merge_and_warnings():
    settings, warnings = merge_settings(Settings(), {"qwenLsp": {
        "maxTokens": 32, "candidates": 99, "debounceMs": "fast", "model": "qwen2.5-coder-1.5b",
        "enable": {"markdown": False}, "logLevel": "loud", "colour": "blue"}})
    assert settings.max_tokens == 32 and settings.model == "qwen2.5-coder-1.5b"
    assert settings.candidates == Settings().candidates and settings.debounce_ms == Settings().debounce_ms
    assert not settings.enabled_for("markdown") and settings.enabled_for("python")
    assert len(warnings) == 4
    assert merge_settings(Settings(), "nonsense")[0] == Settings()
    assert merge_settings(Settings(), {"maxTokens": True})[1]


def test_debounce_adapts_to_typing_speed():
    d = AdaptiveDebounce(base_ms=50, max_ms=300)
    assert d.delay_ms("u", 0.0) == 50
    t = 0.0
    for _ in range(10):
        t += 0.120
        d.keystroke("u", t)
    assert 170 <= d.delay_ms("u", t) <= 190  # 1.5 x the 120 ms typing gap
    assert d.delay_ms("u", t + 5) == 50  # after a pause
    for _ in range(3):
        d.shown("u")
    assert d.delay_ms("u", t) > 180
    d.accepted("u")
    assert 170 <= d.delay_ms("u", t) <= 190


def test_cache_typed_through_and_bounds():
    cache = CompletionCache(capacity=3)
    cache.put("u", "x = ", "\n", ["hello_world(1)"])
    assert cache.get("u", "x = ", "\n") == ["hello_world(1)"]
    assert cache.get("u", "x = hel", "\n") == ["lo_world(1)"]
    assert cache.get("u", "x = hex", "\n") is None  # typed something else
    assert cache.get("u", "x = hello_world(1)", "\n") is None  # fully typed
    assert cache.get("u", "x = hel", ")\n") is None  # different text after the cursor
    assert cache.get("v", "x = hel", "\n") is None  # other document
    for i in range(5):
        cache.put("u", f"p{i}", "", ["s"])
    assert len(cache) == 3
    cache.forget("u")
    assert len(cache) == 0


def test_cache_compares_only_a_bounded_prefix():
    cache = CompletionCache()
    long_prefix = "#" * 10_000 + "\nx = "
    cache.put("u", long_prefix, "", ["abc"])
    assert cache._entries and all(len(e.prefix_tail) <= 2048 for e in cache._entries.values())
    assert cache.get("u", long_prefix + "a", "") == ["bc"]


def _doc(text):
    return Document("file:///t.py", "python", 3, text)


def test_inline_item_covers_auto_closed_tail_and_typed_word():
    doc = _doc("print(val)\n")
    offset = doc.text.index(")")  # cursor after "val"
    [item] = inline_items(doc, offset, ["ue, end='')"[:-1]], UTF16)
    assert item.insert_text == "value, end='')"
    assert item.range == types.Range(types.Position(0, 6), types.Position(0, 10))


def test_inline_item_keeps_real_text_after_cursor():
    doc = _doc("x = foo + bar\n")
    [item] = inline_items(doc, 4, ["baz"], UTF16)
    assert item.insert_text == "baz" and item.range.end == types.Position(0, 4)


def test_inline_item_range_in_utf16_with_emoji():
    doc = _doc("s = '😀' + na\n")
    offset = doc.text.index("\n")
    [item] = inline_items(doc, offset, ["me"], UTF16)
    assert item.insert_text == "name"
    assert item.range.start == types.Position(0, 11) and item.range.end == types.Position(0, 13)  # emoji = 2 units


def test_completion_item_shape():
    doc = _doc("def f():\n    ret\n")
    offset = doc.text.index("ret") + 3
    result = completion_list(doc, offset, ["urn compute(\n        1)"], UTF16, "python")
    assert result.is_incomplete
    [item] = result.items
    assert item.text_edit.new_text == "return compute(\n        1)" == item.filter_text
    assert item.text_edit.range.start == types.Position(1, 4)
    assert item.label == "return compute(…" and item.sort_text.startswith("0000") and item.preselect
    assert "return compute(" in item.documentation.value
    assert label_for("x" * 100).endswith("…")


def test_roots_refuse_reads_outside_including_symlinks(tmp_path):
    from qwen_lsp.server.roots import WorkspaceRoots

    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.py").write_text("SECRET = 1\n")
    (root / "ok.py").write_text("x = 1\n")
    (root / "link.py").symlink_to(outside / "secret.py")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "binary.py").write_bytes(b"\xff\xfe\x00")
    roots = WorkspaceRoots()
    roots.add(root.as_uri())
    assert roots.read_text(str(root / "ok.py")) == "x = 1\n"
    assert roots.read_text(str(root / "link.py")) is None
    assert roots.read_text(str(root / "linkdir" / "secret.py")) is None
    assert roots.read_text(str(outside / "secret.py")) is None
    assert roots.read_text(str(root / "binary.py")) is None
    assert roots.path_of((root / "linkdir" / "secret.py").as_uri()) is None
    assert roots.path_of("untitled:Untitled-1") is None


def test_lone_surrogates_become_replacement_characters_without_moving_positions():
    doc = Document("u", "python", 1, "a\ud800b")
    assert doc.text == "a\ufffdb"
    doc.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(0, 2), types.Position(0, 2)), text="\udc00"), UTF16)
    assert doc.text == "a\ufffd\ufffdb"
