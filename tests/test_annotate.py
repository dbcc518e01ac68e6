"""The annotate command: inputs, outputs, bad records, shards and resuming (also after a kill),
and the same output from the local engine's worker processes and from Ray.

Inputs are written here from TRAIN_DATA (texts the tiny BERT's vocabulary covers).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import spacy
import typer
from spacy.language import Language
from spacy.util import fix_random_seed
from typer.testing import CliRunner

from spacy_bert_crf.annotate import AnnotateError, annotate
from spacy_bert_crf.annotate.io import expand_inputs, iter_chunks, parse_record, plan_shards
from spacy_bert_crf.cli.annotate import annotate_cli

from .util import TRAIN_DATA, make_examples, make_light_nlp, make_trf_nlp, train

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [text for text, _ in TRAIN_DATA]
# Lines that are not annotatable records, each with (a part of) the reason it gets.
BAD_LINES = [
    (b"{not json", "not JSON"),
    (b'["a", "list"]', "not a JSON object"),
    (b'{"id": "no-text"}', "no 'text' field"),
    (b'{"id": "int", "text": 5}', "'text' is int"),
    (b'{"id": "nul", "text": "a\\u0000b"}', "NUL byte"),
    (b'{"id": "latin1", "text": "caf\xe9"}', "not UTF-8"),
    (b'{"id": "boom", "text": "BOOM goes the pipeline"}', "pipeline error: ValueError"),
]
SLOW_SECONDS = 0.03


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@Language.component("annotate_test_fail")
def _fail_on_boom(doc):
    """Fails on texts with BOOM, like a pipeline that chokes on one record."""
    if "BOOM" in doc.text:
        raise ValueError("BOOM in the text")
    return doc


@Language.component("annotate_test_slow")
def _slow_down(doc):
    """Slows the pipeline down, so that a run can be killed halfway."""
    time.sleep(SLOW_SECONDS)
    return doc


def write_jsonl(path: Path, n_good: int, bad_every: int = 0) -> Path:
    """n_good records {"id", "meta", "text"} (TRAIN_DATA texts in turn); a bad line after
    every bad_every good ones (BAD_LINES in turn), and blank lines, which are not records."""
    lines = []
    n_bad = 0
    for i in range(n_good):
        record = {"id": f"doc-{i}", "meta": {"n": i}, "text": TEXTS[i % len(TEXTS)]}
        lines.append(json.dumps(record).encode("utf8"))
        if bad_every and (i + 1) % bad_every == 0:
            lines.append(BAD_LINES[n_bad % len(BAD_LINES)][0])
            lines.append(b"   ")
            n_bad += 1
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def output_files(folder: Path):
    """{relative path: bytes} of the shards and errors files."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("shard-*"))
    }


@pytest.fixture(scope="module")
def light_model(tmp_path_factory):
    """A trained hash-embedding pipeline that fails on BOOM (fast)."""
    fix_random_seed(0)
    nlp = make_light_nlp()
    train(nlp, make_examples(nlp), steps=60, lr=0.01)
    nlp.add_pipe("annotate_test_fail", first=True)
    path = tmp_path_factory.mktemp("annotate-light") / "model"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def trf_model(tiny_bert_dir, tmp_path_factory):
    """A tiny random BERT + crf_ner pipeline, trained a little (no test components: worker
    processes and Ray actors load it without this module)."""
    fix_random_seed(0)
    nlp = make_trf_nlp(tiny_bert_dir)
    train(nlp, make_examples(nlp), steps=10, lr=0.01)
    path = tmp_path_factory.mktemp("annotate-trf") / "model"
    nlp.to_disk(path)
    return path


def test_records_carry_fields_and_entities(trf_model, tmp_path):
    """Every field of the input comes through, and the entities are those of nlp(text), with
    character offsets into the text and the crf_ner confidences."""
    inputs = write_jsonl(tmp_path / "in.jsonl", 12)
    summary = annotate(trf_model, [inputs], tmp_path / "out", shard_size=5, batch_size=4,
                       progress=False)
    assert (summary["in"], summary["annotated"], summary["failed"]) == (12, 12, 0)
    assert summary["shards"] == 3
    records = [r for k in range(3) for r in read_jsonl(tmp_path / "out" / f"shard-{k:05d}.jsonl")]
    assert [r["id"] for r in records] == [f"doc-{i}" for i in range(12)]
    assert records[7]["meta"] == {"n": 7}
    nlp = spacy.load(trf_model)
    n_entities = 0
    for record in records:
        doc = nlp(record["text"])
        scores = dict(zip(((s.start_char, s.end_char) for s in doc.spans["crf_ner"]),
                          doc.spans["crf_ner"].attrs["scores"]))
        assert [(e["start"], e["end"], e["label"]) for e in record["entities"]] == [
            (e.start_char, e.end_char, e.label_) for e in doc.ents
        ]
        for ent in record["entities"]:
            assert ent["text"] == record["text"][ent["start"] : ent["end"]]
            assert ent["confidence"] == pytest.approx(scores[(ent["start"], ent["end"])],
                                                      abs=1e-3)
            n_entities += 1
    assert n_entities > 0


def test_bad_records_go_to_the_errors_file(light_model, tmp_path):
    """Bad lines don't stop the job: each is in errors/ with file:line and the reason, and
    in = annotated + failed."""
    inputs = write_jsonl(tmp_path / "in.jsonl", 14, bad_every=2)
    summary = annotate(light_model, [inputs], tmp_path / "out", shard_size=4, progress=False)
    assert (summary["in"], summary["annotated"], summary["failed"]) == (21, 14, 7)
    assert summary["in"] == summary["annotated"] + summary["failed"]
    errors = [e for p in sorted((tmp_path / "out" / "errors").glob("*.jsonl"))
              for e in read_jsonl(p)]
    assert len(errors) == 7
    lines = inputs.read_bytes().split(b"\n")
    for entry, (bad_line, reason) in zip(errors, BAD_LINES):
        assert entry["file"] == str(inputs)
        assert lines[entry["line"] - 1] == bad_line
        assert reason in entry["reason"]
    written = [r for p in sorted((tmp_path / "out").glob("shard-*.jsonl")) for r in read_jsonl(p)]
    assert [r["id"] for r in written] == [f"doc-{i}" for i in range(14)]
    saved = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf8"))
    assert saved["failed"] == 7


def test_txt_and_parquet_inputs_parquet_output(light_model, tmp_path):
    """A .txt file (a document per line) and a Parquet file in one job, globbed, written as
    Parquet: the same entities as the JSONL output."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("\n".join(TEXTS[:3]) + "\n\n", encoding="utf8")
    table = pa.table({"doc_id": [10, 11, 12], "body": TEXTS[3:], "n": [1.5, None, 2.0]})
    pq.write_table(table, tmp_path / "in" / "b.parquet", row_group_size=2)
    pattern = str(tmp_path / "in" / "*")
    kwargs = dict(text_key="body", shard_size=2, progress=False)
    annotate(light_model, [pattern], tmp_path / "jsonl", **kwargs)
    summary = annotate(light_model, [pattern], tmp_path / "pq", output_format="parquet", **kwargs)
    assert (summary["in"], summary["failed"]) == (6, 0)
    from_jsonl = [r for p in sorted((tmp_path / "jsonl").glob("shard-*")) for r in read_jsonl(p)]
    from_parquet = [
        r for p in sorted((tmp_path / "pq").glob("shard-*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]
    # a Parquet shard has the union of its records' columns (null where a record lacks one)
    assert [{k: v for k, v in p.items() if k in j} for p, j in zip(from_parquet, from_jsonl)] \
        == from_jsonl
    assert all(v is None for p, j in zip(from_parquet, from_jsonl) for k, v in p.items()
               if k not in j)
    assert [(r.get("file"), r.get("line")) for r in from_jsonl[:3]] == [
        (str(tmp_path / "in" / "a.txt"), n) for n in (1, 2, 3)
    ]
    assert [r.get("doc_id") for r in from_jsonl[3:]] == [10, 11, 12]
    assert [r["body"] for r in from_jsonl] == TEXTS
    assert sum(len(r["entities"]) for r in from_jsonl) > 0


def test_entities_of_other_components_have_no_confidence(light_model, tmp_path):
    nlp = spacy.load(light_model)
    ruler = nlp.add_pipe("entity_ruler", before="crf_ner")
    ruler.add_patterns([{"label": "LOC", "pattern": "Lisbon"}])
    nlp.to_disk(tmp_path / "model")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": TEXTS[0]}) + "\n", encoding="utf8")
    annotate(tmp_path / "model", [inputs], tmp_path / "out", progress=False)
    (record,) = read_jsonl(tmp_path / "out" / "shard-00000.jsonl")
    by_text = {e["text"]: e for e in record["entities"]}
    assert by_text["Lisbon"]["confidence"] is None
    assert [e for e in record["entities"] if e["confidence"] is not None]


def test_shards_follow_record_indices(tmp_path):
    """Shard k holds records [k*S, (k+1)*S) across files; blank lines are not records."""
    first = write_jsonl(tmp_path / "a.jsonl", 5, bad_every=2)  # 7 records
    second = tmp_path / "b.txt"
    second.write_text("x\n\ny\nz\n", encoding="utf8")  # 3 records
    paths = expand_inputs([first, second])
    shards = plan_shards(paths, 4)
    assert [(s.start, s.size) for s in shards] == [(0, 4), (4, 4), (8, 2)]
    assert (shards[1].file_index, shards[1].line) == (0, 6)
    assert (shards[2].file_index, shards[2].line) == (1, 3)
    records = [parse_record(i, "t.jsonl", i + 1, b'{"text": "a"}', "text") for i in range(5)]
    records.insert(2, parse_record(9, "t.jsonl", 9, b"{", "text"))
    chunks = list(iter_chunks(records, 2))
    assert [[r.index for r in c] for c in chunks] == [[0, 1, 9], [2, 3], [4]]


def test_inputs_and_output_errors(light_model, tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", 3)
    with pytest.raises(AnnotateError, match="No input file matches"):
        annotate(light_model, [str(tmp_path / "*.parquet")], tmp_path / "o1", progress=False)
    (tmp_path / "in.csv").write_text("text\nhello\n", encoding="utf8")
    with pytest.raises(AnnotateError, match="Unsupported input file"):
        annotate(light_model, [tmp_path / "in.csv"], tmp_path / "o2", progress=False)
    with pytest.raises(AnnotateError, match="Input file not found"):
        annotate(light_model, [tmp_path / "gone.jsonl"], tmp_path / "o2", progress=False)
    with pytest.raises(AnnotateError, match="Model not found"):
        annotate(tmp_path / "missing", [inputs], tmp_path / "o3", progress=False)
    annotate(light_model, [inputs], tmp_path / "o4", shard_size=2, progress=False)
    with pytest.raises(AnnotateError, match="shard_size changed"):
        annotate(light_model, [inputs], tmp_path / "o4", shard_size=3, progress=False)
    # another pipeline (here: the same one, retrained, so its meta.json differs) can't resume
    shutil.copytree(light_model, tmp_path / "retrained")
    meta = json.loads((tmp_path / "retrained" / "meta.json").read_text(encoding="utf8"))
    meta["performance"] = {"ents_f": 0.5}
    (tmp_path / "retrained" / "meta.json").write_text(json.dumps(meta), encoding="utf8")
    with pytest.raises(AnnotateError, match="model_fingerprint changed"):
        annotate(tmp_path / "retrained", [inputs], tmp_path / "o4", shard_size=2, progress=False)


@pytest.mark.skipif(has_cuda(), reason="tests the error without a GPU")
def test_gpu_id_without_a_gpu(light_model, tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", 2)
    with pytest.raises(AnnotateError, match="Can't use GPU 0"):
        annotate(light_model, [inputs], tmp_path / "out", gpu_id=0, progress=False)
    assert not list((tmp_path / "out").glob("shard-*"))


def test_rerun_skips_finished_shards(light_model, tmp_path):
    """An interrupted run leaves whole shards only; the rerun writes the rest, and the result
    is the same as one uninterrupted run."""
    inputs = write_jsonl(tmp_path / "in.jsonl", 20, bad_every=3)
    annotate(light_model, [inputs], tmp_path / "ref", shard_size=4, progress=False)

    def stop_after_two(shard_id):
        if shard_id == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        annotate(light_model, [inputs], tmp_path / "out", shard_size=4, progress=False,
                 on_shard=stop_after_two)
    assert len(list((tmp_path / "out").glob("shard-*.jsonl"))) == 2
    summary = annotate(light_model, [inputs], tmp_path / "out", shard_size=4, progress=False)
    assert (summary["shards_skipped"], summary["shards_written"]) == (2, 5)
    assert (summary["in"], summary["annotated"], summary["failed"]) == (26, 20, 6)
    assert output_files(tmp_path / "out") == output_files(tmp_path / "ref")


_RUN_CLI = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); import tests.test_annotate; "
    "from spacy_bert_crf.cli import app; app()"
)


@pytest.mark.slow
def test_resume_after_kill(light_model, tmp_path):
    """Kill -9 a CLI run after its first shards, run it again: no duplicates, no gaps."""
    nlp = spacy.load(light_model)
    nlp.add_pipe("annotate_test_slow")
    nlp.to_disk(tmp_path / "slow")
    inputs = write_jsonl(tmp_path / "in.jsonl", 60, bad_every=5)  # 72 records, 18 shards
    args = [str(tmp_path / "slow"), str(inputs), "--output", str(tmp_path / "out"),
            "--shard-size", "4", "--batch-size", "2", "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-c", _RUN_CLI, str(ROOT), "annotate", *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while len(list((tmp_path / "out").glob("shard-*.jsonl"))) < 2:
        assert process.poll() is None, process.communicate()[0].decode()
        assert time.monotonic() < deadline, "no shard written in 180 s"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    done = sorted((tmp_path / "out").glob("shard-*.jsonl"))
    assert 2 <= len(done) < 18, "the run finished before it was killed"
    for path in done:  # whole shards only
        errors = tmp_path / "out" / "errors" / path.name
        assert len(read_jsonl(path)) + (len(read_jsonl(errors)) if errors.exists() else 0) == 4
    result = CliRunner().invoke(_app(), ["annotate", *args])
    assert result.exit_code == 0, result.output
    assert "Resumed" in result.output
    assert "Documents in: 72, annotated: 60, failed: 12" in result.output
    annotate(tmp_path / "slow", [inputs], tmp_path / "ref", shard_size=4, batch_size=2,
             progress=False)
    assert output_files(tmp_path / "out") == output_files(tmp_path / "ref")
    ids = [r["id"] for p in sorted((tmp_path / "out").glob("shard-*")) for r in read_jsonl(p)]
    assert ids == [f"doc-{i}" for i in range(60)]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("annotate")(annotate_cli)
    app.command("other")(lambda: None)  # two commands, so "annotate" is a subcommand as in cli/
    return app


def test_cli(light_model, tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", 4, bad_every=4)
    result = CliRunner().invoke(
        _app(), ["annotate", str(light_model), str(inputs), "-o", str(tmp_path / "out"),
                 "--format", "jsonl", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "Documents in: 5, annotated: 4, failed: 1" in result.output
    assert "bad records" in result.output
    result = CliRunner().invoke(
        _app(), ["annotate", str(light_model), str(inputs), "-o", str(tmp_path / "o2"),
                 "--format", "csv"]
    )
    assert result.exit_code == 1 and "Unknown output format 'csv'" in result.output
    from spacy_bert_crf.cli import app

    assert "annotate" in [c.name for c in app.registered_commands]


def test_threads_per_worker(light_model, tmp_path):
    """--threads-per-worker sets torch's threads of a local worker (here: this process) and is
    recorded in the summary; 0 is refused."""
    import torch

    inputs = write_jsonl(tmp_path / "in.jsonl", 4)
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            _app(), ["annotate", str(light_model), str(inputs), "-o", str(tmp_path / "out"),
                     "--threads-per-worker", "1", "--no-progress"]
        )
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["threads_per_worker"] == 1 and summary["annotated"] == 4
    with pytest.raises(AnnotateError, match="threads_per_worker must be at least 1, got 0"):
        annotate(light_model, [inputs], tmp_path / "zero", threads_per_worker=0, progress=False)


def test_memory_is_released_every_few_chunks(light_model, tmp_path, monkeypatch):
    """Freed heap memory goes back to the OS every RELEASE_EVERY chunks a process annotates,
    so a long job's memory stays flat; glibc's malloc_trim does it here."""
    import platform

    from spacy_bert_crf.annotate import worker

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert worker.release_memory() is True
    calls = []
    monkeypatch.setattr(worker, "release_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(worker, "_chunks_since_release", 0)
    inputs = write_jsonl(tmp_path / "in.jsonl", 20)
    summary = annotate(light_model, [inputs], tmp_path / "out", shard_size=8, batch_size=3,
                       progress=False)
    # shards of 8, 8 and 4 records: 3 + 3 + 2 chunks, a release after the 4th and the 8th
    assert summary["shards_written"] == 3 and len(calls) == 8 // worker.RELEASE_EVERY == 2


@pytest.mark.slow
def test_two_worker_processes_match_one(trf_model, tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", 30, bad_every=4)
    kwargs = dict(shard_size=8, batch_size=4, progress=False)
    annotate(trf_model, [inputs], tmp_path / "one", **kwargs)
    summary = annotate(trf_model, [inputs], tmp_path / "two", workers=2, **kwargs)
    assert (summary["in"], summary["annotated"], summary["failed"]) == (37, 31, 6)
    assert output_files(tmp_path / "two") == output_files(tmp_path / "one")


@pytest.mark.slow
def test_ray_matches_local(trf_model, tmp_path):
    """Ray Data, local instance, 2 actors: the same files as the local engine, and resuming."""
    ray = pytest.importorskip("ray")
    inputs = write_jsonl(tmp_path / "in.jsonl", 30, bad_every=4)
    kwargs = dict(shard_size=8, batch_size=4, progress=False)
    annotate(trf_model, [inputs], tmp_path / "local", **kwargs)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = annotate(trf_model, [inputs], tmp_path / "ray", engine="ray", workers=2,
                           cpus_per_worker=0.5, **kwargs)
        assert (summary["in"], summary["annotated"], summary["failed"]) == (37, 31, 6)
        assert output_files(tmp_path / "ray") == output_files(tmp_path / "local")
        for name in ("shard-00001.jsonl", "shard-00003.jsonl"):
            (tmp_path / "ray" / name).unlink()
        summary = annotate(trf_model, [inputs], tmp_path / "ray", engine="ray", workers=2,
                           cpus_per_worker=0.5, **kwargs)
        assert (summary["shards_skipped"], summary["shards_written"]) == (3, 2)
        assert output_files(tmp_path / "ray") == output_files(tmp_path / "local")
    finally:
        ray.shutdown()


def test_sample_asset_is_reproducible(tmp_path):
    """assets/annotate/sample.jsonl is what scripts/make_annotate_sample.py writes."""
    out = tmp_path / "sample.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_annotate_sample.py"),
         str(ROOT / "assets" / "sample"), str(out)],
        check=True, timeout=60,
    )
    shipped = ROOT / "assets" / "annotate" / "sample.jsonl"
    assert out.read_bytes() == shipped.read_bytes()
    assert 200 <= len(read_jsonl(shipped)) <= 500
