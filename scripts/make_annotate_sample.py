"""Write the small JSONL input of the `annotate` example (assets/annotate/sample.jsonl).

One record per sentence of the project's own sample (assets/sample/*.txt, written by
scripts/make_sample.py): {"id": "train-0001", "split": "train", "text": "..."}, the tokens
joined back into plain text. Deterministic: the same file every time.

    python scripts/make_annotate_sample.py assets/sample assets/annotate/sample.jsonl
"""
import json
import re
import sys
from pathlib import Path
from typing import Iterator, List

SPLITS = ("train", "dev", "test")


def sentences(path: Path) -> Iterator[List[str]]:
    """The token lists of a CoNLL file (document separators skipped)."""
    tokens: List[str] = []
    for line in path.read_text(encoding="utf8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                yield tokens
            tokens = []
        else:
            tokens.append(line.split()[0])
    if tokens:
        yield tokens


def detokenize(tokens: List[str]) -> str:
    """Plain text: no space before . , ; : ! ?"""
    return re.sub(r" ([.,;:!?])", r"\1", " ".join(tokens))


def main(sample_dir: str, out_path: str) -> None:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for split in SPLITS:
        for i, tokens in enumerate(sentences(Path(sample_dir) / f"{split}.txt"), 1):
            record = {"id": f"{split}-{i:04d}", "split": split, "text": detokenize(tokens)}
            lines.append(json.dumps(record, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf8")


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "assets/sample",
        sys.argv[2] if len(sys.argv) > 2 else "assets/annotate/sample.jsonl",
    )
