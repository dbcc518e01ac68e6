"""The benchmark harness (benchmarks/): reports made from the committed results, figures from the
data, the shared results schema and the step runner. Fast: nothing is trained."""
import json
import shutil
import sys
from argparse import Namespace
from dataclasses import replace

import pytest

from benchmarks import crf_ops, decode_load, machine, measure, report
from benchmarks.markdown import table
from benchmarks.paths import RESULTS, ROOT
from benchmarks.run import main as run_main
from benchmarks.schema import (Machine, PeerResults, ResultsError, TrainingRun, check,
                               load_results)
from benchmarks.systems import System
from benchmarks.train_eval import render_training

PEER_FILE = RESULTS / "2026-11-23-intel-xeon-2c.json"


def peer_results() -> dict:
    return load_results(PEER_FILE)


# ---------------------------------------------------------------------------------------------
# The committed reports are what the renderers make of the committed results
# ---------------------------------------------------------------------------------------------


def test_benchmarks_md_is_rendered_from_the_committed_results():
    rendered = report.render_report(report.peer_results_files(RESULTS))
    assert rendered == (ROOT / "BENCHMARKS.md").read_text(encoding="utf8")


def test_subset_reports_are_rendered_from_their_results():
    """Peer runs kept apart from the main report (e.g. results/low_data/...) have their own
    BENCHMARKS.md, made from the results file beside it."""
    folders = [md.parent for md in RESULTS.rglob("BENCHMARKS.md")]
    assert folders  # results/low_data/train500 at least
    for folder in folders:
        rendered = report.render_report(report.peer_results_files(folder))
        assert rendered == (folder / "BENCHMARKS.md").read_text(encoding="utf8"), folder


@pytest.mark.parametrize("checks,shown", [
    ([True, True], "ok"),
    ([True, False], "DIFFERS"),
    ([None, False], "DIFFERS"),
    ([None, None], "not run"),
    ([True, None], "ok, not all seeds"),
])
def test_seqeval_crosscheck_cell(checks, shown):
    assert report._crosscheck(checks) == shown


def test_report_only_cli_renders_the_same_report(tmp_path):
    shutil.copy(PEER_FILE, tmp_path / PEER_FILE.name)
    (tmp_path / "other.json").write_text('{"kind": "something else"}', encoding="utf8")
    markdown = tmp_path / "report.md"
    run_main(["--report-only", "--out", str(tmp_path), "--markdown", str(markdown)])
    committed = (ROOT / "BENCHMARKS.md").read_text(encoding="utf8").splitlines()
    made = markdown.read_text(encoding="utf8").splitlines()
    differ = [(a, b) for a, b in zip(committed, made) if a != b]
    assert len(made) == len(committed)
    # only the results file's own path differs (it lies outside the repository here)
    assert len(differ) == 1 and differ[0][1].startswith("Results file: `.../")


def test_training_md_is_rendered_from_the_committed_results():
    results = load_results(RESULTS / "training.json")
    rendered = render_training(results)
    assert rendered == (RESULTS / "training.md").read_text(encoding="utf8")
    # the GPU named in the header is the one of the records, not a figure in the code
    assert "GPU rows: NVIDIA H100 80GB HBM3, NVIDIA H200;" in rendered


def test_training_md_names_the_gpus_of_the_records():
    results = load_results(RESULTS / "training.json")
    tag, run = next((t, r) for t, r in results.items() if r["gpu"])
    run = dict(run, machine={"cpu": "x", "cores": 8, "memory_gib": 1.0, "os": "Linux",
                             "torch_threads": 4, "device": "cuda:0", "gpu": "NVIDIA H200"})
    rendered = render_training({tag: run})
    assert "GPU rows: NVIDIA H200;" in rendered and "H100" not in rendered.split("\n## ")[0]
    assert "Machine: x, 8 cores, GPU NVIDIA H200, 4 torch threads." in rendered


def test_crf_micro_benchmark_reports_are_rendered_from_their_results():
    for module, name in ((crf_ops, "crf_ops"), (decode_load, "decode_load")):
        data = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf8"))
        assert module.render(data) == (RESULTS / f"{name}.md").read_text(encoding="utf8")


# ---------------------------------------------------------------------------------------------
# Figures come from the data
# ---------------------------------------------------------------------------------------------


def test_package_version_reads_the_installed_distribution():
    assert machine.package_version("pytest") == pytest.__version__
    assert machine.package_version("no-such-distribution-here") is None
    versions = machine.package_versions(["pytest", "no-such-distribution-here"])
    assert list(versions) == ["python", "pytest", "no-such-distribution-here"]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))


def test_crf_ops_records_the_installed_pytorch_crf_version(tmp_path, monkeypatch):
    """pytorch-crf's module has no __version__: the version is the distribution's, never a
    figure written in the code."""
    def fake_metadata_version(name):
        return {"pytorch-crf": "9.8.7", "torch": "1.2.3"}.get(name, "0")

    timings = {"nll_fwd_bwd": {"ours_ms": 1.0, "pytorch_crf_ms": 2.0, "speedup": 2.0}}
    monkeypatch.setattr(machine, "metadata_version", fake_metadata_version)
    monkeypatch.setattr(crf_ops, "run", lambda *args, **kwargs: timings)
    monkeypatch.setattr(crf_ops, "conll_tags", lambda: ["O"] * 17)  # no import of the package
    crf_ops.main(["--repeats", "3", "--threads", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "crf_ops.json").read_text(encoding="utf8"))
    assert data["versions"]["pytorch-crf"] == "9.8.7"
    assert data["versions"]["torch"] == "1.2.3"
    assert set(Machine.__required_keys__) <= set(data["machine"])
    text = (tmp_path / "crf_ops.md").read_text(encoding="utf8")
    assert "torch 1.2.3, pytorch-crf 9.8.7." in text
    assert "median of 3 interleaved repeats" in text


def test_the_split_seed_in_the_report_is_the_recorded_one():
    data = peer_results()["datasets"]["conll03"]
    carved = dict(data, data=dict(data["data"], dev_from_train={
        "source": "train.txt", "size": 1234, "seed": 7}))
    text = "\n".join(report.render_data("msra", carved))
    assert "dev is 1,234 sentences carved from train.txt" in text
    assert "seed 7" in text and "seed 0" not in text
    # no carving recorded (CoNLL has a dev file): nothing is said about one
    assert "carved" not in "\n".join(report.render_data("conll03", data))


def test_the_speed_seed_in_the_report_is_the_recorded_one():
    speed = peer_results()["datasets"]["conll03"]["speed"]
    assert "`benchmarks/peers/speed.py`: seed-0 models," in report.render_speed(speed)[0]
    assert "seed-3 models," in report.render_speed(dict(speed, seed=3))[0]
    # a file without the seed: the one seed of its models' paths, or none at all
    models = {name: path.replace("seed0", "seed2") for name, path in speed["models"].items()}
    assert "seed-2 models," in report.render_speed(dict(speed, models=models))[0]
    models["crf"] = models["crf"].replace("seed2", "seed1")
    first = report.render_speed(dict(speed, models=models))[0]
    assert "speed.py`: models," in first and "seed-" not in first


# ---------------------------------------------------------------------------------------------
# The results schema
# ---------------------------------------------------------------------------------------------


def test_committed_results_follow_the_schema():
    check(peer_results(), PeerResults, PEER_FILE.name)
    for tag, run in load_results(RESULTS / "training.json").items():
        check(run, TrainingRun, f"training.json: {tag}")
    assert set(Machine.__required_keys__) <= set(machine.machine_info(2))


def test_a_results_file_without_a_field_fails_naming_file_and_field(tmp_path):
    results = peer_results()
    del results["machine"]
    with pytest.raises(ResultsError, match=r"x\.json: a PeerResults without machine"):
        report.render_file(results, tmp_path / "x.json")
    training = load_results(RESULTS / "training.json")
    tag = sorted(training)[0]
    del training[tag]["scores"]
    with pytest.raises(ResultsError, match=f"training.json: {tag}: a TrainingRun without scores"):
        render_training(training)
    (tmp_path / "broken.json").write_text("{", encoding="utf8")
    with pytest.raises(ResultsError, match="broken.json: not a JSON results file"):
        load_results(tmp_path / "broken.json")


def test_table_alignment_has_one_letter_per_column():
    assert table(["a", "b"], [["1", "2"]], "lr") == ["| a | b |", "|---|---:|", "| 1 | 2 |"]
    with pytest.raises(ValueError, match="1 letters for 2 columns"):
        table(["a", "b"], [], "l")


# ---------------------------------------------------------------------------------------------
# The step runner, with a system whose steps are tiny scripts
# ---------------------------------------------------------------------------------------------

TRAIN = "import pathlib, sys; pathlib.Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)"
INFER = """import json, pathlib, sys
data, work, fail = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "1"
if fail:
    sys.exit("no model here")
for split in ("dev", "test"):
    gold = [json.loads(line) for line in (data / f"{split}.jsonl").open()]
    with (work / f"pred-{split}.jsonl").open("w") as f:
        for row in gold:  # the gold entities, but the last one of each doc dropped
            f.write(json.dumps({"doc": row["doc"], "ents": row["ents"][:1]}) + "\\n")
(work / "infer.json").write_text(json.dumps({"speed": {"1": {"words_per_second": 5.0}}}))
"""


class ScriptSystem(System):
    def __init__(self, fail_infer: bool = False):
        super().__init__("script", "a system of two scripts", "none")
        self.fail_infer = fail_infer

    def train_command(self, seed, args, data, work, env):
        return [sys.executable, "-c", TRAIN, self.model_path(args, work)], {"epochs": 1}

    def infer_command(self, args, data, work, model, step):
        return [sys.executable, "-c", INFER, data, work, int(self.fail_infer)]


def test_run_seed_trains_infers_scores_and_reuses_the_training(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    docs = [{"doc": 0, "words": ["A", "b", "C"], "ents": [[0, 1, "X"], [2, 3, "Y"]]},
            {"doc": 1, "words": ["D"], "ents": [[0, 1, "X"]]}]
    for split in ("dev", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    monkeypatch.setattr(measure, "WORK", tmp_path / "work")
    monkeypatch.setitem(measure.SYSTEMS, "script", ScriptSystem())
    args = Namespace(threads=1, timeout_train=60, timeout_infer=60, force=False, run_key="k",
                     dataset="d")
    settings = {"dataset": "d"}
    record = measure.run_seed("script", 4, args, data, settings, do_scale=False)
    assert record["status"] == "ok", record.get("error")
    assert record["train"]["budget"] == {"epochs": 1}
    assert record["infer"]["speed"]["1"]["words_per_second"] == 5.0
    test = record["scores"]["test"]
    assert (test["tp"], test["n_pred"], test["n_gold"]) == (2, 2, 3)
    assert "script seed 4: test P 100.00 R 66.67" in capsys.readouterr().out
    again = measure.run_seed("script", 4, args, data, settings, do_scale=False)
    assert again["train"] == record["train"]
    assert "reusing the training" in capsys.readouterr().out
    monkeypatch.setitem(measure.SYSTEMS, "script", ScriptSystem(fail_infer=True))
    failed = measure.run_seed("script", 4, args, data, settings, do_scale=False)
    assert failed["status"] == "failed" and failed["failed_step"] == "infer"
    assert "infer failed (exit 1)" in failed["error"]
    assert failed["infer"]["returncode"] == 1


def test_run_speed_times_the_models_of_the_seed_it_is_given(tmp_path, monkeypatch):
    """The in-process speed run takes the run's first seed, and records it for the report."""
    monkeypatch.setattr(measure, "WORK", tmp_path / "work")
    args = Namespace(threads=1, timeout_infer=60, force=False, run_key="k", dataset="d",
                     encoder=tmp_path, speed_rounds=1, batch_sizes="1", limit_b1=0)
    settings = {"dataset": "d"}
    ok = {"status": "ok"}
    systems = {"raw": {"settings": settings, "seeds": {"0": ok}},
               "crf": {"settings": settings, "seeds": {"0": ok, "1": ok}},
               "hf": {"settings": settings, "seeds": {"0": ok}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"kind": "spacy-bert-crf peer benchmark",
                                "datasets": {"d": {"systems": systems}}}))
    for name, seed in (("crf", 1), ("hf", 0)):
        work = measure.seed_work(args, name, seed)
        measure.SYSTEMS[name].model_path(args, work).mkdir(parents=True)
    commands = []

    def fake_measurement(step, cmd, work, timeout, threads, settings, **fields):
        commands.append([str(c) for c in cmd])
        return {"status": "ok", "settings": settings, **fields}

    monkeypatch.setattr(measure, "run_measurement", fake_measurement)
    measure.run_speed(args, tmp_path, path, settings, seed=1)
    systems_timed = [c.split("=")[0] for c in commands[0] if "=" in c]
    # crf's seed-1 model (its seed-0 one is not there), not hf: it has no seed 1
    assert systems_timed == ["raw", "crf"]
    speed = load_results(path)["datasets"]["d"]["speed"]
    assert speed["seed"] == 1
    assert "seed-1 models" in report.SPEED_TEXT.format(
        which_models="seed-1 models", rounds=1, limit_b1=0)


def test_decode_load_report_reads_the_shared_machine_record():
    """The committed report is rendered from its results; the machine line comes from the shared
    machine record (benchmarks/machine.py), whatever it holds."""
    data = json.loads((RESULTS / "decode_load.json").read_text(encoding="utf8"))
    committed = (RESULTS / "decode_load.md").read_text(encoding="utf8")
    assert decode_load.render(data).strip() == committed.strip()
    data["machine"] = {"cpu": "Some CPU", "cores": 4, "memory_gib": 8.0, "os": "Linux-x",
                       "torch_threads": 3, "device": "cpu"}
    data["versions"] = {"python": "3.11.0", "torch": "2.0.0", "numpy": "2.0.0"}
    made = decode_load.render(data).splitlines()
    assert made[2] == (f"Date {data['date']}; Some CPU, 4 cores, Linux-x; Python 3.11.0, torch "
                       "2.0.0 (3 intra-op threads), numpy 2.0.0.")
    assert "share of the 4 CPUs" in made[-1]


def test_decode_load_brackets_each_run_with_a_reference_in_the_same_condition(monkeypatch):
    """measure() times a single-threaded reference next to every run, and `own` is the decode's
    time over the reference's in loaded runs against the same in idle runs."""
    calls = []

    def fake_timed(fn, condition, reference=0):
        calls.append((condition, reference))
        # idle: decode 1 s, reference 1 s; loaded: decode 3 s, reference 2 s -> own 1.5
        return (3.0, 1.0, 2.0) if condition == "loaded" else (1.0, 1.0, 1.0)

    monkeypatch.setattr(decode_load, "timed", fake_timed)
    monkeypatch.setattr(decode_load, "reference_iterations", lambda seconds: 1234)
    crf, tags = decode_load.build_crf(seed=0)
    em, mask = decode_load.make_workloads(crf)["sentences"]
    r = decode_load.measure(crf, tags, "viterbi", em[:4], mask[:4], "after", budget=0.0)
    assert r["loaded_over_idle"] == pytest.approx(3.0)
    assert r["reference_loaded_over_idle"] == pytest.approx(2.0)
    assert r["own"] == pytest.approx(1.5)
    timed_runs = [c for c in calls if c[1] == 1234]
    assert len(timed_runs) == 2 * r["idle"]["runs"] and r["idle"]["runs"] >= 2
    assert {c[0] for c in timed_runs} == {"idle", "loaded"}


def test_decode_load_reference_loop_scales_with_the_time_asked_for():
    few, many = decode_load.reference_iterations(0.001), decode_load.reference_iterations(0.05)
    assert 1000 <= few < many


def test_prepare_data_records_how_dev_was_carved(tmp_path, monkeypatch):
    """The carving (source, size, seed) goes into stats.json, which the results and report
    take it from; changing it makes the data again."""
    from benchmarks import data as bench_data

    sentences = [[("北", "B-LOC"), ("京", "I-LOC"), ("好", "O")], [("张", "B-PER"), ("三", "I-PER")],
                 [("天", "O")], [("上", "B-LOC"), ("海", "I-LOC")]]
    source = tmp_path / "msra"
    source.mkdir()
    for name, rows in (("train", sentences), ("test", sentences[:2])):
        text = "\n\n".join("\n".join(f"{c}\t{t}" for c, t in s) for s in rows)
        (source / f"{name}.txt").write_text(text + "\n", encoding="utf8")
    carve = {"source": "train.txt", "size": 1, "seed": 5}
    monkeypatch.setattr(bench_data, "WORK", tmp_path / "work")
    monkeypatch.setitem(bench_data.DATASETS, "msra",
                        replace(bench_data.DATASETS["msra"], dev_from_train=carve))
    limits = {"train": 0, "dev": 0, "test": 0}
    out = bench_data.prepare_data("msra", source, limits)
    stats = json.loads((out / "stats.json").read_text(encoding="utf8"))
    assert stats["dev_from_train"] == carve
    counts = {split: s["sentences"] for split, s in stats["splits"].items()}
    assert counts == {"train": 3, "dev": 1, "test": 2}
    assert stats["splits"]["dev"]["full_file"]["file"] == "train.txt"
    text = "\n".join(report.render_data("msra", {"data": stats, "encoder": "e"}))
    assert "dev is 1 sentences carved from train.txt" in text and "seed 5" in text
    # another seed: the data are made again, not reused
    monkeypatch.setitem(bench_data.DATASETS, "msra",
                        replace(bench_data.DATASETS["msra"], dev_from_train=dict(carve, seed=6)))
    bench_data.prepare_data("msra", source, limits)
    assert json.loads((out / "stats.json").read_text())["dev_from_train"]["seed"] == 6


# ---------------------------------------------------------------------------------------------
# annotate: the plain nlp.pipe reference runs in a child of its own (issue 17)
# ---------------------------------------------------------------------------------------------


def test_annotate_plan_puts_the_reference_in_its_own_run_before_local_x1():
    from benchmarks import annotate

    assert annotate.plan(["local x2", " local x1", "ray x1", "", "nlp.pipe", "local x1 t1",
                          "ray  x2 t1"]) == [
        ("local x2", "local", 2, None),
        (annotate.REFERENCE, annotate.PIPE, 1, None),
        ("local x1", "local", 1, None),
        ("ray x1", "ray", 1, None),
        ("local x1 t1", "local", 1, 1),  # threads per worker: no reference of its own
        ("ray x2 t1", "ray", 2, 1),
    ]
    assert annotate.plan(["ray x2"]) == [("ray x2", "ray", 2, None)]  # no local x1: no reference
    for bad in ("local 2", "local x0", "ray x2 t0", "ray x2 t"):
        with pytest.raises(SystemExit, match=f"Invalid run '{bad}': expected 'local xN' or"):
            annotate.plan([bad])


class FakeNlp:
    def __init__(self):
        self.piped = []

    def pipe(self, texts, batch_size):
        self.piped.append(list(texts))
        return [text.split() for text in self.piped[-1]]


@pytest.mark.parametrize("engine,workers", [("pipe", 1), ("local", 1), ("local", 2)])
def test_annotate_child_runs_the_reference_alone(tmp_path, monkeypatch, capsys, engine, workers):
    """The reference child runs plain nlp.pipe and no annotate; the local x1 child runs annotate
    only (the reference's texts and docs are no longer in its peak RSS); both load the pipeline
    before their timer and record their torch threads."""
    import spacy_bert_crf.annotate
    import spacy_bert_crf.annotate.worker
    from benchmarks import annotate

    nlp = FakeNlp()
    loaded, annotated = [], []
    monkeypatch.setattr(spacy_bert_crf.annotate.worker, "load_pipeline",
                        lambda model, threads=None: loaded.append((model, threads)) or nlp)

    def fake_annotate(model, inputs, output, *, nlp, on_shard, workers, **kwargs):
        annotated.append((workers, nlp))
        assert kwargs["threads_per_worker"] is None
        for shard in range(4):
            on_shard(shard)
        return {"in": 2, "annotated": 2, "failed": 0, "run": {"words": 5}}

    monkeypatch.setattr(spacy_bert_crf.annotate, "annotate", fake_annotate)
    path = tmp_path / "input.jsonl"
    path.write_text('{"id": 0, "text": "a b c"}\n{"id": 1, "text": "d e"}\n', encoding="utf8")
    args = Namespace(model="m", input=str(path), output=str(tmp_path / "out"), engine=engine,
                     workers=workers, threads=None)
    annotate.child(args)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    if engine == "pipe":
        assert nlp.piped == [["a b c", "d e"]] and annotated == []
        assert result["nlp_pipe"]["words"] == 5 and "annotate" not in result
    else:
        assert nlp.piped == [] and "nlp_pipe" not in result
        assert annotated == [(workers, nlp if workers == 1 else None)]
        assert result["annotate"]["words"] == 5 and result["annotate"]["shards"] == 4
    one_process = workers == 1
    assert loaded == ([("m", None)] if one_process else [])
    assert ("threads" in result) == one_process
    if one_process:
        assert result["threads"] == annotate.torch_threads()


def annotate_results(reference_threads=2):
    def run(words_per_second, rss, **extra):
        return {"annotate": {"in": 10, "annotated": 10, "failed": 0, "words": 1000,
                             "seconds": 1000 / words_per_second,
                             "words_per_second": words_per_second,
                             "steady_words_per_second": words_per_second,
                             "first_shard_seconds": 1.0, "shards": 4},
                "driver_peak_rss_mib": rss, "worker_peak_rss_mib": rss, **extra}

    def reference(words_per_second, rss):
        return {"nlp_pipe": {"words": 1000, "seconds": 1000 / words_per_second,
                             "words_per_second": words_per_second},
                "threads": reference_threads, "driver_peak_rss_mib": rss,
                "worker_peak_rss_mib": rss}

    return {
        "date": "2026-12-03", "machine": machine.machine_info(2, -1),
        "versions": {"python": "3.11.7"}, "command": "python -m benchmarks.annotate",
        "pipeline": "p", "input": "i", "note": "n", "big": 10,
        "load_average": {"start": [0.1], "end": [0.2]},
        "runs": {
            "1x": {"nlp.pipe": reference(3000.0, 900.0), "local x1": run(2900.0, 950.0, threads=2)},
            "10x": {"nlp.pipe": reference(3100.0, 1000.0),
                    "local x1": run(3000.0, 990.0, threads=2)},
        },
    }


def test_annotate_summary_takes_the_reference_from_its_own_process():
    from benchmarks import annotate

    results = annotate_results()
    summary = annotate.summarize(results)
    assert summary[0] == (
        "10x: local x1 / plain nlp.pipe (each in a fresh process of its own, same texts, pipeline "
        "loaded before both; torch threads 2 and 2): 0.97 (3,000 vs 3,100 words/s; target >= "
        "0.90: met); peak RSS 990 vs 1,000 MiB")
    assert summary[1].startswith("1x: local x1 / plain nlp.pipe (each in a fresh process")
    assert "RSS plain nlp.pipe (its own process), 1x -> 10x input: 900 -> 1,000 MiB" in summary
    assert "RSS local x1, 1x -> 10x input: driver 950 -> 990 MiB, worker 950 -> 990 MiB" in summary
    # the reference is no annotate run: the best rate is local x1's, not the reference's
    assert summary[-1].startswith("CPU cost here: 0.09 machine-hours per million words at the "
                                  "best end-to-end rate (3,000 words/s, local x1 on 10x")
    unfair = annotate.summarize(annotate_results(reference_threads=1))
    assert "torch threads 1 and 2: NOT the same, not a fair comparison" in unfair[0]
    results["summary"] = summary
    rendered = annotate.render(results)
    assert "| 1x | plain nlp.pipe | 1,000 | 3,000 | - | - | 900 | 900 |" in rendered
    assert "| 10x | local x1 | 1,000 | 3,000 | 3,000 | 1.0 | 990 | 990 |" in rendered
    assert "plain nlp.pipe: the reference over the same texts, in a fresh process" in rendered


def test_annotate_summary_gives_the_median_of_the_alternating_pairs():
    from benchmarks import annotate

    results = annotate_results()
    results["pairs"] = [{"nlp.pipe": 3000.0, "local x1": 2850.0, "threads": [2, 2]},
                        {"nlp.pipe": 3100.0, "local x1": 2697.0, "threads": [2, 2]},
                        {"nlp.pipe": 3000.0, "local x1": 2910.0, "threads": [2, 2]}]
    line = next(x for x in annotate.summarize(results) if "alternating pairs" in x)
    assert line == ("1x: local x1 / plain nlp.pipe, median of 3 alternating pairs of fresh "
                    "processes: 0.95 (pairs: 0.95, 0.87, 0.97; target >= 0.90: met)")
    results["pairs"][0]["local x1"] = 2400.0
    results["pairs"][2]["local x1"] = 2600.0
    line = next(x for x in annotate.summarize(results) if "alternating pairs" in x)
    assert line.endswith("0.87 (pairs: 0.80, 0.87, 0.87; target >= 0.90: NOT met)")


def test_annotate_results_with_the_reference_inside_local_x1_still_render():
    """Results from before the reference had its own process (it ran in the local x1 child)
    say so, and have no reference row."""
    from benchmarks import annotate

    results = annotate_results()
    for runs in results["runs"].values():
        runs["local x1"]["nlp_pipe"] = runs.pop("nlp.pipe")["nlp_pipe"]
    summary = annotate.summarize(results)
    assert summary[0] == (
        "10x: local x1 / plain nlp.pipe (same process, same texts, pipeline loaded before both): "
        "0.97 (3,000 vs 3,100 words/s; target >= 0.90: met)")
    assert not any("RSS plain nlp.pipe" in line for line in summary)
    results["summary"] = summary
    rendered = annotate.render(results)
    assert "plain nlp.pipe |" not in rendered and "in a fresh process" not in rendered


def test_annotate_md_is_rendered_from_the_committed_results():
    from benchmarks import annotate

    results = json.loads((RESULTS / "annotate.json").read_text(encoding="utf8"))
    assert annotate.render(results) == (RESULTS / "annotate.md").read_text(encoding="utf8")
    assert annotate.summarize(results) == results["summary"]


@pytest.mark.parametrize("augment", ["entity_swap", "token_mask"])
def test_augmented_peer_configs_train_with_the_augmenter(tmp_path, augment):
    """--augment: crf, softmax and spacy_ner train on the dataset's config with the augmenter on
    the training corpus, and only that differs; the budget (and the report) says so."""
    from spacy.util import load_config, registry

    from benchmarks.data import DATASETS
    from benchmarks.peers.spacy_pipe import derive_augmented_config
    from benchmarks.systems import SYSTEMS

    from .util import write_corpus

    base = ROOT / DATASETS["conll03"].config
    derived = derive_augmented_config(base, tmp_path / "aug.cfg", augment)
    ours, theirs = load_config(base, interpolate=False), load_config(derived, interpolate=False)
    augmenter = theirs["corpora"]["train"].pop("augmenter")
    assert ours["corpora"]["train"].pop("augmenter") is None
    assert augmenter["@augmenters"] == f"spacy-bert-crf.{augment}.v1"
    assert ours == theirs
    # it resolves to spaCy's augmenter callable (entity_swap reads its mentions from the corpus)
    corpus = write_corpus(tmp_path / "train.spacy")
    config = load_config(derived, overrides={"paths.train": str(corpus)}, interpolate=True)
    resolved = registry.resolve({"a": config["corpora"]["train"]["augmenter"]})
    assert callable(resolved["a"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"words": ["Maria", "flew"]}) + "\n")
    args = Namespace(augment=augment, dataset="conll03", encoder=tmp_path, epochs=2,
                     keep_schedule=False)
    for name in ("crf", "softmax", "spacy_ner"):
        cmd, budget = SYSTEMS[name].train_command(0, args, data, tmp_path / name, {})
        config = load_config(cmd[4], interpolate=False)
        assert config["corpora"]["train"]["augmenter"]["@augmenters"] == augmenter["@augmenters"]
        assert budget["augment"] == augment
        assert report.budget_text(budget).endswith(f"+ {augment}")


def test_augment_refuses_systems_that_are_not_spacy_pipelines(tmp_path):
    with pytest.raises(SystemExit, match="--augment applies to the spaCy systems .* not hf"):
        run_main(["--systems", "crf,hf", "--augment", "entity_swap", "--out", str(tmp_path)])


CONLL_DOCS = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC

The DT B-NP O
Commission NNP I-NP B-ORG
said VBD B-VP O

-DOCSTART- -X- -X- O

Germany NNP B-NP B-LOC
"""


def test_document_context_data_hold_the_same_sentences_and_entities(tmp_path, monkeypatch):
    """--context documents: one doc per -DOCSTART- document, holding the sentences and gold
    entities of the sentence setting at shifted offsets; a sentence limit keeps whole documents;
    the stats and the report say so."""
    from benchmarks import data as bench_data
    from benchmarks.peers.common import read_split

    source = tmp_path / "conll"
    source.mkdir()
    for split in ("train", "dev", "test"):
        (source / f"{split}.txt").write_text(CONLL_DOCS, encoding="utf8")
    monkeypatch.setattr(bench_data, "WORK", tmp_path / "work")
    whole = {"train": 0, "dev": 0, "test": 0}
    sent_dir = bench_data.prepare_data("conll03", source, whole)
    doc_dir = bench_data.prepare_data("conll03", source, whole, "documents")
    assert doc_dir != sent_dir
    sentences, documents = read_split(sent_dir, "test"), read_split(doc_dir, "test")
    assert [len(r["words"]) for r in sentences] == [2, 2, 1, 3, 1]
    assert [len(r["words"]) for r in documents] == [4, 4, 1]
    assert documents[0]["ents"] == [[0, 1, "ORG"], [2, 4, "PER"]]
    assert documents[1]["ents"] == [[0, 1, "LOC"], [2, 3, "ORG"]]

    def mentions(rows):
        return sorted((tuple(r["words"][s:e]), label) for r in rows for s, e, label in r["ents"])

    assert mentions(documents) == mentions(sentences)
    stats = json.loads((doc_dir / "stats.json").read_text(encoding="utf8"))
    assert stats["context"] == "documents"
    assert stats["splits"]["test"]["sentences"] == 5
    assert stats["splits"]["test"]["documents"] == 3
    text = "\n".join(report.render_data("conll03", {"data": stats, "encoder": "e"}))
    assert "### conll03 · document context" in text
    assert "test 5 sentences in 3 documents / 9 tokens / 5 entities" in text
    # 3 sentences: the first document (2) and the whole second one (2 more)
    limited = bench_data.prepare_data("conll03", source, dict(whole, train=3), "documents")
    train = read_split(limited, "train")
    assert [len(r["words"]) for r in train] == [4, 4]
    stats = json.loads((limited / "stats.json").read_text(encoding="utf8"))
    assert stats["splits"]["train"]["sentences"] == 4
    assert "(first 4 of 5)" in "\n".join(report.render_data("conll03", {"data": stats}))


def test_document_context_budget_and_refusals(tmp_path):
    from spacy.util import load_config

    from benchmarks.systems import SYSTEMS

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"words": ["EU", "rejects"]}) + "\n")
    args = Namespace(augment=None, context="documents", dataset="conll03", encoder=tmp_path,
                     epochs=2, keep_schedule=False)
    for name in ("crf", "softmax", "spacy_ner"):
        cmd, budget = SYSTEMS[name].train_command(0, args, data, tmp_path / name, {})
        assert load_config(cmd[4], interpolate=False)["corpora"]["train"]["augmenter"] is None
        assert report.budget_text(budget) == "2 ep, 2 steps, documents"
    with pytest.raises(SystemExit, match="--context documents applies to the spaCy systems .* "
                                         "not hf, flair"):
        run_main(["--systems", "crf,hf,flair", "--context", "documents", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="the msra files mark no documents"):
        run_main(["--dataset", "msra", "--systems", "crf", "--context", "documents",
                  "--out", str(tmp_path)])


def test_hf_peer_micro_batches_bound_the_padded_size_and_keep_the_batch_gradient(tiny_bert_dir):
    """A batch too long for one pass (MSRA) runs as micro-batches whose weighted losses give the
    batch's gradient."""
    import torch
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification
    from transformers import AutoTokenizer

    from benchmarks.peers.hf_tagger import labelled, micro_batches

    def feature(n, label=1):
        return {"input_ids": [5] * n, "attention_mask": [1] * n,
                "labels": [-100] + [label] * (n - 2) + [-100]}

    parts = micro_batches([feature(10), feature(30), feature(12), feature(3)], max_pieces=60)
    assert [[len(f["input_ids"]) for f in p] for p in parts] == [[10, 30], [12, 3]]
    assert all(len(p) * max(len(f["input_ids"]) for f in p) <= 60 for p in parts)
    assert [len(p) for p in micro_batches([feature(100)], max_pieces=60)] == [1]  # one at least

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(tiny_bert_dir), num_labels=3)
    model.eval()  # no dropout: the two ways must agree
    collate = DataCollatorForTokenClassification(tokenizer)
    batch = [feature(n, label=n % 3) for n in (6, 17, 9, 4, 12)]
    for f in batch:
        inner = [7 + i for i in range(len(f["input_ids"]) - 2)]
        f["input_ids"] = [tokenizer.cls_token_id] + inner + [tokenizer.sep_token_id]

    def grads():
        out = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        return out

    model(**collate(batch)).loss.backward()
    whole = grads()
    parts = micro_batches(batch, max_pieces=40)
    assert len(parts) > 1
    for part in parts:
        share = labelled(part) / labelled(batch)
        (model(**collate(part)).loss * share).backward()
    for a, b in zip(whole, grads()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_train_step_times_the_variants_on_the_same_batches(tmp_path, tiny_bert_dir):
    """benchmarks.train_step builds the config with dense and row-sparse embedding updates (the
    latter also with thinc's optimizer loop, "loop") and its frozen-embeddings twin, checks that
    each trained as named (it raises otherwise), and times the same number of steps."""
    from benchmarks import train_step

    from .util import training_config, write_corpus

    config = tmp_path / "config.cfg"
    schedule = {"@schedules": "warmup_linear.v1", "warmup_steps": 1, "initial_rate": 0.001,
                "total_steps": "${training.max_steps}"}  # as the shipped configs have it
    config.write_text(training_config(max_steps=4, eval_frequency=2, batch_size=40,
                                      settings={"training.optimizer.learn_rate": schedule}))
    train = write_corpus(tmp_path / "train.spacy")
    args = train_step.parse_args([str(config), str(train), "--encoder", str(tiny_bert_dir),
                                  "--steps", "3", "--warmup", "1"])
    result = train_step.measure(args)
    assert train_step.VARIANTS == ("dense", "sparse", "loop", "frozen")
    assert [len(result["seconds"][v]) for v in train_step.VARIANTS] == [3, 3, 3, 3]
    assert result["input_embedding_weights"] < result["encoder_weights"]
    assert result["over_dense"]["sparse"] > 0 and result["over_dense"]["frozen"] > 0
    assert result["sparse_over_loop"] > 0 and result["machine"]["device"] == "cpu"
    rendered = train_step.render({"runs": {"tiny": result}})
    assert "| tiny |" in rendered


def test_train_step_report_is_rendered_from_its_results():
    from benchmarks import train_step

    data = json.loads((RESULTS / "train_step.json").read_text(encoding="utf8"))
    assert train_step.render(data) == (RESULTS / "train_step.md").read_text(encoding="utf8")


def test_train_eval_scores_a_model_trained_elsewhere(tmp_path):
    """benchmarks.train_eval --model: no training; the pipeline is scored on the corpus's dev
    and test, its budget read from its own config, and an unknown train time shown as such."""
    from benchmarks import train_eval

    from .util import TRAIN_DATA, save_light_pipeline

    _, model, gold = save_light_pipeline(tmp_path, TRAIN_DATA, steps=20, lr=0.01)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("dev", "test"):
        shutil.copy(gold, corpus / f"{split}.spacy")
    with pytest.raises(SystemExit):
        train_eval.parse_args(["--model", str(model)])  # no corpus
    train_eval.main(["--model", str(model), "--corpus", str(corpus), "--dataset", "conll03",
                     "--tag", "elsewhere", "--threads", "1", "--out", str(tmp_path)])
    run = json.loads((tmp_path / "training.json").read_text(encoding="utf8"))["elsewhere"]
    assert run["budget"].startswith("max_epochs=0, max_steps=20000")
    assert run["train_seconds"] == -1.0
    assert 0 < run["scores"]["test"]["ents_f"] <= 1
    assert run["scores"]["dev"]["ents_f"] == run["scores"]["test"]["ents_f"]
    assert "| elsewhere | conll03 | default |" in (tmp_path / "training.md").read_text()
    assert "| 1 CPU threads | - |" in (tmp_path / "training.md").read_text()


def test_hf_peer_labels_unspaced_text_by_offsets_and_maps_predictions_back(tmp_path, tiny_bert_dir):
    """Text without spaces (MSRA) goes to the HF peer as text: one label on the first piece of
    each word, found by offsets (not on a bare "▁" piece per character, where
    is_split_into_words puts it with a sentencepiece tokenizer); the pipeline's spans over that
    text come back as word offsets. Spaced text (CoNLL) keeps the word-level path."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from benchmarks.peers.hf_tagger import encode_row, predictor, spaced, text_and_starts

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    label2id = {"O": 0, "B-LOC": 1, "I-LOC": 2}
    zh = {"words": list("在北京住"), "spaces": [False] * 4, "ents": [[1, 3, "LOC"]]}
    assert not spaced(zh) and text_and_starts(zh) == ("在北京住", [0, 1, 2, 3])
    enc = encode_row(zh, tokenizer, label2id)
    assert "offset_mapping" not in enc  # the collator would choke on it
    assert enc["labels"] == [-100, 0, 1, 2, 0, -100]  # [CLS] 在 北 京 住 [SEP]
    # "Oslo" written as the words "Os", "lo" is one piece ("oslo"): "lo" gets no label of its
    # own, and the piece takes the tag of "Os", where it starts
    joined = {"words": ["Os", "lo", "in"], "spaces": [False, True, False],
              "ents": [[0, 2, "LOC"]]}
    assert text_and_starts(joined) == ("Oslo in", [0, 2, 5])
    enc = encode_row(joined, tokenizer, label2id)
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "oslo", "in", "[SEP]"]
    assert enc["labels"] == [-100, 1, 0, -100]
    en = {"words": ["EU", "rejects"], "spaces": [True, False], "ents": [[0, 1, "LOC"]]}
    assert spaced(en)
    assert encode_row(en, tokenizer, label2id)["labels"][:2] == [-100, 1]

    model = AutoModelForTokenClassification.from_pretrained(
        str(tiny_bert_dir), num_labels=3, id2label={0: "O", 1: "B-LOC", 2: "I-LOC"},
        label2id=label2id)
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    predict = predictor(tmp_path / "hf")
    out = predict([zh, en, zh], 2)
    assert len(out) == 3 and out[0] == out[2]
    for row, ents in zip([zh, en], out):
        for start, end, label in ents:
            assert 0 <= start < end <= len(row["words"]) and label == "LOC"
