"""Record post-processing fixtures from an eval run's raw model outputs.

    python -m qwen_lsp.eval.record_fixtures --cases CASES.jsonl --rows ROWS.jsonl --out FIXTURES.jsonl

Each fixture keeps the raw continuation, the text around the cursor and today's
post-processed result as the expectation; review them before committing.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..context.languages import language_for_path
from ..postprocess import CursorContext, postprocess
from .cases import load_cases, masked_document, resolve_workspace

CONTEXT_LINES = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", required=True)
    parser.add_argument("--rows", required=True, help="rows written by `qwen-lsp eval --rows`")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="label stored per fixture")
    args = parser.parse_args(argv)
    cases = {case.id: case for case in load_cases(args.cases)}
    seen, fixtures = set(), []
    with open(args.rows, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            case = cases.get(row["id"])
            if case is None or (row["id"], row["raw"]) in seen:
                continue
            seen.add((row["id"], row["raw"]))
            text = masked_document(case, (resolve_workspace(case.workspace) / case.file)
                                   .read_text(encoding="utf-8"))
            lines = text.split("\n")
            prefix = "\n".join(lines[max(0, case.line - CONTEXT_LINES):case.line]
                               + [lines[case.line][:case.col]])
            suffix = "\n".join([lines[case.line][case.col:]]
                               + lines[case.line + 1:case.line + CONTEXT_LINES])
            language = language_for_path(case.file)
            fixtures.append({
                "id": f"{row['id']}:{row.get('config', '')}", "model": args.model,
                "language": language, "prefix": prefix, "suffix": suffix, "raw": row["raw"],
                "expected": postprocess(row["raw"], CursorContext(prefix, suffix, language)),
                "reference": case.middle})
    with open(args.out, "w", encoding="utf-8") as handle:
        for fixture in fixtures:
            handle.write(json.dumps(fixture, ensure_ascii=False) + "\n")
    print(f"{len(fixtures)} fixtures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
