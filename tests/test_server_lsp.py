"""Round trips through a real pipe to the real server process, on the tiny random model.

Random weights write gibberish, but the same gibberish every time (seed 0): the tests check the
mechanics (ranges, caches, cancellation, settings), never what the text says.
"""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from server_harness import (apply_item, edit, inline_params, lsp_session, open_doc, raw_request, send_raw, stats,
                            units, wait_for_state)

pytestmark = pytest.mark.asyncio

# A file whose prompt, at this context budget, takes the tiny model dozens of prefill chunks.
LONG_FILE = "".join(f"# block {i}\ndef add_{i}(a, b):\n    return a + b * {i}\n\n" for i in range(400)) + "x = \n"
LONG_LINE = LONG_FILE.count("\n") - 1
LONG_BUDGET = {"contextBudget": 8192}


def _rss_kb(client) -> int:
    with open(f"/proc/{client._server.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


async def test_initialize_advertises_features(tmp_path, tiny_server_model):
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        caps = client.init_result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None
        assert caps.code_action_provider.resolve_provider is True
        assert caps.position_encoding == "utf-16"
        assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
        assert [s.state for s in client.statuses][-1] == "ready"


async def test_inline_completion_round_trip(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        open_doc(client, uri, "x = \n")
        result = await client.text_document_inline_completion_async(inline_params(uri, 0, 4, explicit=True))
        [item] = result.items
        assert item.insert_text
        assert item.range == types.Range(types.Position(0, 4), types.Position(0, 4))
        assert item.command.command == "qwenLsp.accepted"
        generation = (await stats(client))["last_generation"]
        assert generation["prompt_tokens"] > 0 and generation["generated_tokens"] > 0


async def test_model_loads_in_background_with_progress_and_early_requests_get_empty_results(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path, wait_ready=False) as client:
        open_doc(client, uri, "x = \n")
        results = await asyncio.gather(*[
            client.text_document_inline_completion_async(inline_params(uri, 0, 4, explicit=True)) for _ in range(20)])
        assert all(not r.items for r in results), results
        assert (await stats(client))["not_ready"] == 20  # the runtime takes seconds to import and load
        assert await wait_for_state(client, {"ready"}) == "ready"
        assert [s.state for s in client.statuses][0] == "loading"
        [reports] = client.progress_reports.values()
        assert isinstance(reports[0], types.WorkDoneProgressBegin) and isinstance(reports[-1], types.WorkDoneProgressEnd)
        assert any("ready" in m.message for m in client.log_messages)
        result = await client.text_document_inline_completion_async(inline_params(uri, 0, 4, explicit=True))
        assert result.items


async def test_model_load_failure_reports_error_and_stays_alive(tmp_path):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(str(tmp_path / "no-such-model.gguf"), root=tmp_path) as client:
        assert client.statuses[-1].state == "error"
        assert any(m.type == types.MessageType.Error and "no-such-model.gguf" in m.message for m in client.messages)
        open_doc(client, uri, "x = \n")
        result = await client.text_document_inline_completion_async(inline_params(uri, 0, 4, explicit=True))
        assert result.items == ()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
async def test_position_encoding_negotiated_and_used(tmp_path, tiny_server_model, encoding):
    uri = (tmp_path / "a.py").as_uri()
    line = "s = '漢😀e\u0301' + na"
    end = units(line, encoding)
    async with lsp_session(tiny_server_model, root=tmp_path, encodings=[encoding, "utf-16"]) as client:
        assert client.init_result.capabilities.position_encoding == encoding
        open_doc(client, uri, line + "\n")
        result = await client.text_document_inline_completion_async(inline_params(uri, 0, end, explicit=True))
        [item] = result.items
        assert item.insert_text.startswith("na")  # the typed word is re-included
        assert item.range == types.Range(types.Position(0, end - 2), types.Position(0, end))
        whole = apply_item(line, item, encoding)
        # An incremental edit at the end of the line, in the same encoding: the next character
        # of the suggestion, so the typed-through cache answers with the rest of it.
        typed = whole[len(line)]
        edit(client, uri, 2, 0, end, typed)
        result = await client.text_document_inline_completion_async(
            inline_params(uri, 0, end + units(typed, encoding), explicit=True))
        [item] = result.items
        assert item.range.end == types.Position(0, end + units(typed, encoding))
        assert apply_item(line + typed, item, encoding) == whole


async def test_malformed_and_out_of_range_requests_get_errors_not_a_dead_server(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        open_doc(client, uri, "x = \n")
        with pytest.raises(JsonRpcException) as bad_params:
            await raw_request(client, "textDocument/inlineCompletion", {"textDocument": 5})
        assert bad_params.value.code == -32602
        with pytest.raises(JsonRpcException) as out_of_range:
            await client.text_document_inline_completion_async(inline_params(uri, 99, 0, explicit=True))
        assert out_of_range.value.code == -32602
        with pytest.raises(JsonRpcException) as unknown:
            await client.protocol.send_request_async("qwenLsp/noSuchMethod", {})
        assert unknown.value.code == -32601
        past_eol = await client.text_document_inline_completion_async(inline_params(uri, 0, 500, explicit=True))
        assert past_eol.items and past_eol.items[0].range.end.character == 4
        unopened = await client.text_document_inline_completion_async(inline_params(uri + "x", 0, 0, explicit=True))
        assert unopened.items == ()
        edit(client, uri + "x", 2, 0, 0, "ghost")  # didChange for an unopened document
        edit(client, uri, 2, 40, 0, "tail")  # a range past the end is clamped: appended
        await client.text_document_inline_completion_async(inline_params(uri, 1, 4, explicit=True))
        prompt = (await client.protocol.send_request_async("qwenLsp/lastPrompt", {})).prompt
        assert "x = \ntail<|fim_suffix|>" in prompt


async def test_typing_through_a_suggestion_is_served_from_the_cache(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        open_doc(client, uri, "x = \n")
        first = await client.text_document_inline_completion_async(inline_params(uri, 0, 4))
        suggestion = first.items[0].insert_text
        typed = suggestion.split("\n")[0][:5]
        assert typed
        line = "x = "
        for i, ch in enumerate(typed):
            edit(client, uri, 2 + i, 0, 4 + i, ch)
            line += ch
            result = await client.text_document_inline_completion_async(inline_params(uri, 0, 5 + i))
            assert apply_item(line, result.items[0]) == "x = " + suggestion  # the rest of the same suggestion
        counters = await stats(client)
        assert counters["model_calls"] == 1 and counters["cache_hits"] == len(typed)


async def test_cancel_request_during_the_prefill_stops_the_engine(tmp_path, tiny_server_model):
    uri = (tmp_path / "long.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path, init_options={**LONG_BUDGET, "timeBudgetMs": 60000}) as client:
        open_doc(client, uri, LONG_FILE)
        params = client.protocol._converter.unstructure(inline_params(uri, LONG_LINE, 4, explicit=True))
        future = send_raw(client, "textDocument/inlineCompletion", params, "slow-1")
        await wait_for_state(client, {"generating"})
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="slow-1"))
        with pytest.raises(JsonRpcException) as cancelled:
            await asyncio.wait_for(future, 60)
        assert cancelled.value.code == -32800
        counters = await stats(client)
        assert counters["cancelled"] == 1
        # The engine stopped (before or during the prefill) rather than running to the end.
        generation = counters["last_generation"]
        assert generation.get("stop_reason", "cancelled") == "cancelled" and generation.get("generated_tokens", 0) == 0
        result = await client.text_document_inline_completion_async(inline_params(uri, LONG_LINE, 4, explicit=True))
        assert result.items and (await stats(client))["last_generation"]["generated_tokens"] > 0


async def test_a_time_budget_spent_in_the_prefill_still_answers_and_keeps_the_prompt(tmp_path, tiny_server_model):
    uri = (tmp_path / "long.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path, init_options={**LONG_BUDGET, "timeBudgetMs": 50}) as client:
        open_doc(client, uri, LONG_FILE)
        await client.text_document_inline_completion_async(inline_params(uri, LONG_LINE, 4, explicit=True))
        spent = (await stats(client))["last_generation"]
        assert spent["generated_tokens"] > 0  # the prompt is finished, decoding stops at a newline
        await client.text_document_inline_completion_async(inline_params(uri, LONG_LINE, 2, explicit=True))
        resumed = (await stats(client))["last_generation"]
        assert resumed["reused_prompt_tokens"] > 0


async def test_newer_request_preempts_older_generation(tmp_path, tiny_server_model):
    uri = (tmp_path / "long.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path, init_options={**LONG_BUDGET, "timeBudgetMs": 60000}) as client:
        open_doc(client, uri, LONG_FILE)
        old = asyncio.ensure_future(client.text_document_inline_completion_async(
            inline_params(uri, LONG_LINE, 4, explicit=True)))
        await wait_for_state(client, {"generating"})
        edit(client, uri, 2, LONG_LINE, 4, "a")
        new = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(LONG_LINE, 5)))
        assert (await old).items == ()  # stale: dropped
        assert new.is_incomplete
        assert (await stats(client))["cancelled"] == 1


async def test_cancellation_storm_keeps_server_responsive_and_bounded(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        open_doc(client, uri, "x = \n")
        await client.text_document_inline_completion_async(inline_params(uri, 0, 4, explicit=True))
        rss_before = _rss_kb(client)
        pending = []
        version, col = 1, 4
        for round_ in range(3):
            for i in range(100):
                version += 1
                edit(client, uri, version, 0, col, "z")
                col += 1
                pending.append(asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(uri, 0, col))))
                if i % 3 == 0:
                    pending.append(asyncio.ensure_future(client.text_document_completion_async(types.CompletionParams(
                        text_document=types.TextDocumentIdentifier(uri), position=types.Position(0, col)))))
                if i % 10 == 0:
                    client.protocol.notify("$/cancelRequest", types.CancelParams(id=999_999))  # unknown id: ignored
                await asyncio.sleep(0.003)
        results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 60)
        assert not [r for r in results if isinstance(r, Exception)]
        counters = await stats(client)
        assert counters["model_calls"] < 50, counters
        final = await asyncio.wait_for(
            client.text_document_inline_completion_async(inline_params(uri, 0, col, explicit=True)), 5)
        assert final.items
        assert _rss_kb(client) - rss_before < 30_000


async def test_classic_completion_item(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        open_doc(client, uri, "def f():\n    ret\n")
        result = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 7)))
        assert result.is_incomplete
        [item] = result.items
        assert item.text_edit.new_text == item.filter_text and item.text_edit.new_text.startswith("ret")
        assert item.text_edit.range == types.Range(types.Position(1, 4), types.Position(1, 7))
        assert item.text_edit.new_text.startswith(item.label.rstrip("…"))
        assert item.sort_text.startswith("0000") and item.text_edit.new_text in item.documentation.value


async def test_settings_warnings_and_per_language_enable(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.md").as_uri()
    options = {"maxTokens": -4, "candidates": 2, "enable": {"markdown": False}, "bogus": 1}
    async with lsp_session(tiny_server_model, root=tmp_path, init_options=options) as client:
        warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
        assert any("maxTokens" in w for w in warnings) and any("bogus" in w for w in warnings)
        open_doc(client, uri, "# title\n", language="markdown")
        assert (await client.text_document_inline_completion_async(inline_params(uri, 0, 7, explicit=True))).items == ()
        assert (await stats(client))["model_calls"] == 0
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"qwenLsp": {"enable": {"markdown": True}, "maxTokens": 1, "debounceMs": "x"}}))
        await client.text_document_inline_completion_async(inline_params(uri, 0, 7, explicit=True))
        counters = await stats(client)
        assert counters["model_calls"] == 1 and counters["last_generation"]["generated_tokens"] <= 1
        assert any("debounceMs" in m.message for m in client.messages)


async def test_accepting_precomputes_the_next_completion(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        open_doc(client, uri, "x = \n")
        result = await client.text_document_inline_completion_async(inline_params(uri, 0, 4, explicit=True))
        item = result.items[0]
        accepted = item.insert_text.split("\n")[0]
        client.protocol.notify("textDocument/didShowCompletion", {"item": client.protocol._converter.unstructure(item)})
        edit(client, uri, 2, 0, 4, accepted)
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=item.command.command, arguments=item.command.arguments))
        client.protocol.notify("textDocument/didPartiallyAcceptCompletion",
                               {"item": client.protocol._converter.unstructure(item), "acceptedLength": 3})
        for _ in range(100):
            if (await stats(client))["precomputed"]:
                break
            await asyncio.sleep(0.02)
        calls = (await stats(client))["model_calls"]
        after = await client.text_document_inline_completion_async(inline_params(uri, 0, 4 + len(accepted.encode("utf-16-le")) // 2))
        assert after.items and (await stats(client))["model_calls"] == calls


async def test_bad_text_huge_files_and_garbage_on_the_wire_keep_the_server_alive(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        open_doc(client, (tmp_path / "big.py").as_uri(), "x = 1\n" * 500_000)  # 3 MB: over maxFileBytes
        big = await client.text_document_inline_completion_async(inline_params((tmp_path / "big.py").as_uri(), 10, 0, explicit=True))
        assert big.items == ()
        open_doc(client, uri, "s = '\ud800' + \n", language="no-such-language")  # lone surrogate, unknown language
        result = await client.text_document_inline_completion_async(inline_params(uri, 0, 9, explicit=True))
        assert result.items
        stdin = client._server.stdin
        for body in (
            b"\xff\xfe{bad}\xc3",  # not UTF-8, not JSON
            b"[]",  # JSON, not a message
            b'{"jsonrpc": "2.0", "id": "odd", "method": "textDocument/inlineCompletion", "params": null}',
        ):
            stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await stdin.drain()
        again = await client.text_document_inline_completion_async(inline_params(uri, 0, 9, explicit=True))
        assert again.items


async def test_tcp_transport(tmp_path, tiny_server_model):
    import socket
    import subprocess

    from server_harness import server_command, server_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(server_command(tiny_server_model, "--tcp", f"127.0.0.1:{port}"),
                            env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the server did not listen within 60 s")
        body = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}'
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        response = await reader.readexactly(length)
        assert b'"inlineCompletionProvider"' in response
        writer.close()
    finally:
        proc.kill()
        proc.wait()
