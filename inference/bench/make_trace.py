"""Make a recorded-typing trace from any git repository, for `qwen-lsp bench --replay`.

A trace is JSON: the repository's name, the starting text of the files it touches (plus a few
neighbours as context), and a list of edits at cursor positions. Two kinds of sessions per file:

- "fresh": the rest of a function body is deleted, then its next line is typed character by
  character (the model must write code it has not seen);
- "edit": a copy of an existing function is started under a new name below it (the model can
  copy the body: the re-typing / renaming case prompt lookup is made for).

A request is marked after every word typed (and at the start of each session).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
from pathlib import Path

_FUNCTION = re.compile(r"^(?P<indent>[ \t]*)def (?P<name>\w+)\(", re.MULTILINE)


def tracked_python_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "*.py"], capture_output=True, text=True, check=True)
    return [p for p in out.stdout.splitlines() if p]


def _function_spans(text: str) -> list[tuple[int, int, re.Match]]:
    """(start, end) character offsets of top-level-ish functions with a body of 3+ lines."""
    spans = []
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    for match in _FUNCTION.finditer(text):
        first = text.count("\n", 0, match.start())
        indent = len(match.group("indent"))
        last = first + 1
        while last < len(lines) and (not lines[last].strip() or
                                     len(lines[last]) - len(lines[last].lstrip()) > indent):
            last += 1
        while last > first + 1 and not lines[last - 1].strip():
            last -= 1
        if last - first >= 4:
            spans.append((offsets[first], offsets[last], match))
    return spans


def _typing(path: str, offset: int, text: str, kind: str) -> list[dict]:
    """Insert `text` one character at a time from `offset`; request after each word and at the end."""
    events = []
    for i, char in enumerate(text):
        word_done = not char.isalnum() and char != "_" and i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        events.append(dict(path=path, offset=offset + i, delete=0, insert=char, kind=kind,
                           request=word_done or i == len(text) - 1))
    return events


def sessions_for_file(path: str, text: str, rng: random.Random, typed_chars: int) -> list[dict]:
    """One fresh-code and one edit-like session on a file, as events against its current text."""
    spans = _function_spans(text)
    if not spans:
        return []
    events = []
    start, end, match = rng.choice(spans)
    body = text[start:end]
    body_lines = body.splitlines(keepends=True)
    cut_line = rng.randrange(1, len(body_lines) - 1)
    cut = start + sum(len(line) for line in body_lines[:cut_line])
    new_line = body_lines[cut_line]
    indent = len(new_line) - len(new_line.lstrip())
    events.append(dict(path=path, offset=cut, delete=end - cut, insert="", kind="fresh", request=False))
    typed = new_line[:indent] + new_line[indent:].rstrip("\n")[:typed_chars]
    events += _typing(path, cut, typed, "fresh")
    # Undo: restore the original text so the edit session sees the file as it was.
    events.append(dict(path=path, offset=cut, delete=len(typed), insert=text[cut:end], kind="fresh", request=False))

    start, end, match = rng.choice(spans)
    header = text[match.start():text.index("\n", match.start()) + 1]
    renamed = header.replace(match.group("name"), match.group("name") + "_v2", 1)
    insert_at = end
    events.append(dict(path=path, offset=insert_at, delete=0, insert="\n\n", kind="edit", request=False))
    events += _typing(path, insert_at + 2, renamed, "edit")
    return events


def make_trace(repo: Path, files: int = 3, context_files: int = 4, typed_chars: int = 24, seed: int = 0,
               max_file_chars: int = 12000) -> dict:
    """A trace over `files` Python files of `repo` (each small enough to fit a prompt)."""
    repo = Path(repo)
    rng = random.Random(seed)
    candidates = []
    for path in tracked_python_files(repo):
        try:
            text = (repo / path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if 400 < len(text) <= max_file_chars and _function_spans(text):
            candidates.append((path, text))
    rng.shuffle(candidates)
    chosen = candidates[:files]
    neighbours = [c for c in candidates[files:] if len(c[1]) < max_file_chars // 2][:context_files]
    events = []
    for path, text in chosen:
        events += sessions_for_file(path, text, rng, typed_chars)
    return dict(repo=repo.resolve().name, files={p: t for p, t in chosen + neighbours},
                context=[p for p, _ in neighbours], events=events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make a typing trace from a git repository.")
    parser.add_argument("repo", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--context-files", type=int, default=4)
    parser.add_argument("--typed-chars", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    trace = make_trace(args.repo, args.files, args.context_files, args.typed_chars, args.seed)
    args.out.write_text(json.dumps(trace, indent=1))
    print(f"{sum(e['request'] for e in trace['events'])} requests over {args.files} files -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
