"""BARTScore on a tiny BART built here (tokenizer trained in the test, random weights, saved with
save_pretrained and loaded back by path): the real loading and scoring code, not the real weights.
Every score is checked against a plain one-pair-at-a-time computation of the paper's definition."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.quality import QualityOptions, assess
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

torch = pytest.importorskip("torch")
from analyzer.quality.bartscore import BARTScorer, BartScoreUnavailable, load_checkpoint, plan_batches  # noqa: E402
from analyzer.quality.testing import build_tiny_bart  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 48

SRCS = [
    "Paris is the capital of France.",
    "short",
    "二分查找每一步把区间减半。",
    "The quick brown fox jumps over the lazy dog. " * 6,  # longer than MAX_LENGTH: truncated
    "Energy per token is measured in joules.",
]
TGTS = [
    "Paris.",
    "A much longer target text than its source, with several words in it.",
    "时间复杂度为 O(log n)。",
    "fox",
    "Large language models generate text one token at a time, and energy is measured in joules. " * 2,
]


@pytest.fixture(scope="session")
def tiny_bart(tmp_path_factory) -> Path:
    return build_tiny_bart(tmp_path_factory.mktemp("tiny-bart"))


@pytest.fixture(scope="session")
def scorer(tiny_bart) -> BARTScorer:
    """min_fill=0: pairs of very different lengths share batches, so padding is always exercised."""
    return BARTScorer(checkpoint=str(tiny_bart), device="cpu", max_length=MAX_LENGTH, batch_size=2, min_fill=0.0)


@pytest.fixture(scope="session")
def definition(tiny_bart):
    """The paper's score, one pair at a time, written out plainly: labels = tgt ids, NLL of every
    non-pad tgt token from log-softmax of the logits, summed, over the attention-mask length, negated."""
    from transformers import AutoTokenizer, BartForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tiny_bart)
    model = BartForConditionalGeneration.from_pretrained(tiny_bart).eval()

    def score(src: str, tgt: str) -> float:
        enc_src = tokenizer([src], max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
        enc_tgt = tokenizer([tgt], max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
        labels = enc_tgt["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=enc_src["input_ids"], attention_mask=enc_src["attention_mask"], labels=labels).logits
        log_probs = torch.log_softmax(logits[0], dim=-1)
        total = 0.0
        for position, token in enumerate(labels[0].tolist()):
            if token != model.config.pad_token_id:
                total -= log_probs[position, token].item()
        return -total / enc_tgt["attention_mask"].sum().item()

    return score


class TestScore:
    def test_batched_scores_match_the_definition_pair_by_pair(self, scorer, definition):
        """Length-sorted, padded batches give the one-pair-at-a-time numbers, in input order."""
        got = scorer.score(SRCS, TGTS)
        want = [definition(s, t) for s, t in zip(SRCS, TGTS)]
        assert got == pytest.approx(want, abs=1e-4)
        assert len(set(round(v, 6) for v in got)) == len(got)  # distinct values: an order mix-up would show

    def test_batches_really_are_padded(self, scorer):
        """Guard for the test above: with min_fill=0 the planner pairs up texts of different lengths."""
        src = [len(r) for r in scorer.encode(SRCS)]
        tgt = [len(r) for r in scorer.encode(TGTS)]
        batches = plan_batches(src, tgt, 2, scorer.min_fill)
        assert sorted(i for b in batches for i in b) == list(range(len(SRCS)))
        assert any(len(b) == 2 and len({tgt[i] for i in b}) == 2 for b in batches)

    def test_default_fill_gives_the_same_scores(self, tiny_bart, scorer):
        default = BARTScorer(checkpoint=str(tiny_bart), device="cpu", max_length=MAX_LENGTH, batch_size=4)
        assert default.min_fill == 0.9
        assert default.score(SRCS, TGTS) == pytest.approx(scorer.score(SRCS, TGTS), abs=1e-4)

    def test_batch_size_does_not_change_scores(self, scorer):
        one = [scorer.score([s], [t])[0] for s, t in zip(SRCS, TGTS)]
        assert scorer.score(SRCS, TGTS, batch_size=5) == pytest.approx(one, abs=1e-4)
        assert scorer.score(SRCS, TGTS, batch_size=1) == pytest.approx(one, abs=1e-4)

    def test_results_follow_input_order(self, scorer):
        forward = scorer.score(SRCS, TGTS)
        backward = scorer.score(SRCS[::-1], TGTS[::-1])
        assert backward == pytest.approx(forward[::-1], abs=1e-5)

    def test_texts_are_truncated_to_max_length(self, scorer):
        ids = scorer.encode([SRCS[3], TGTS[4]])
        assert [len(row) for row in ids] == [MAX_LENGTH, MAX_LENGTH]
        assert ids[0][0] == 0 and ids[0][-1] == 2  # <s> … </s> kept, as the reference tokenizer call does

    def test_score_is_an_average_log_likelihood(self, scorer):
        """Random weights over a 400-token vocabulary: about -log(400) per token, always below 0."""
        for value in scorer.score(SRCS, TGTS):
            assert value < 0 and abs(value - (-math.log(400))) < 3

    def test_duplicate_pairs_are_scored_once(self, tiny_bart):
        """Repeated runs giving the same answer cost one model pass; every copy gets the same score."""
        fresh = BARTScorer(checkpoint=str(tiny_bart), device="cpu", max_length=MAX_LENGTH)
        scores = fresh.score([SRCS[0], SRCS[1], SRCS[0], SRCS[0]], [TGTS[0], TGTS[1], TGTS[0], TGTS[1]])
        assert fresh.pairs_scored == 3
        assert scores[0] == scores[2] and scores[3] != scores[0]
        assert scores[:2] == pytest.approx(fresh.score(SRCS[:2], TGTS[:2]), abs=1e-5)

    def test_empty_input_and_mismatched_lengths(self, scorer):
        assert scorer.score([], []) == []
        with pytest.raises(ValueError, match="differ in length"):
            scorer.score(["a", "b"], ["a"])

    def test_precision_recall_f_follow_the_paper(self, scorer):
        refs, hyps = SRCS[:3], TGTS[:3]
        p, r, f = scorer.score_prf(refs, hyps)
        assert p == pytest.approx(scorer.score(refs, hyps), abs=1e-5)  # precision: ref → hyp
        assert r == pytest.approx(scorer.score(hyps, refs), abs=1e-5)  # recall: hyp → ref
        assert f == pytest.approx([(a + b) / 2 for a, b in zip(p, r)])  # the paper's F: arithmetic mean
        _, _, harmonic = scorer.score_prf(refs, hyps, f_mean="harmonic")
        assert harmonic == pytest.approx([2 * a * b / (a + b) for a, b in zip(p, r)], abs=1e-5)

    def test_rejects_bad_settings(self, tiny_bart):
        with pytest.raises(ValueError, match="batch_size"):
            BARTScorer(checkpoint=str(tiny_bart), device="cpu", batch_size=0)
        with pytest.raises(ValueError, match="max_length"):
            BARTScorer(checkpoint=str(tiny_bart), device="cpu", max_length=1)


class TestPlanBatches:
    def test_every_pair_once_longest_first_within_size(self):
        src, tgt = [5, 50, 7, 49, 6, 51], [5, 40, 6, 41, 5, 39]
        # totals 10, 90, 13, 90, 11, 90; ties go to the longer target first
        assert plan_batches(src, tgt, batch_size=2, min_fill=0.0) == [[3, 1], [5, 2], [4, 0]]

    def test_padding_waste_starts_a_new_batch(self):
        """A short pair is not padded up to a long one when that would leave under min_fill real tokens."""
        batches = plan_batches([100, 100, 10], [100, 100, 10], batch_size=8, min_fill=0.9)
        assert batches == [[0, 1], [2]]
        assert plan_batches([100, 100, 10], [100, 100, 10], batch_size=8, min_fill=0.0) == [[0, 1, 2]]

    def test_mismatched_lengths_are_rejected(self):
        with pytest.raises(ValueError, match="differ in length"):
            plan_batches([1, 2], [1], 2, 0.5)


class TestLoading:
    def test_missing_directory_says_so_with_the_fix(self, tmp_path):
        with pytest.raises(BartScoreUnavailable, match="does not exist") as info:
            load_checkpoint(str(tmp_path / "no-model-here"))
        assert "fetch_checkpoint" in str(info.value) and "BARTSCORE_CHECKPOINT" in str(info.value)

    def test_directory_without_a_model_says_what_it_needs(self, tmp_path):
        with pytest.raises(BartScoreUnavailable, match="save_pretrained"):
            load_checkpoint(str(tmp_path))

    def test_offline_hub_id_not_cached_fails_at_once(self, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(BartScoreUnavailable, match="HF_HUB_OFFLINE is set") as info:
            load_checkpoint("quality-tests/no-such-bart")
        assert "hf download quality-tests/no-such-bart" in str(info.value)

    def test_unreachable_hub_fails_without_hanging(self, monkeypatch):
        """No network: the probe of the hub endpoint (here a closed local port) fails, so no download is tried."""
        from huggingface_hub import constants

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(BartScoreUnavailable, match="cannot be reached"):
            load_checkpoint("quality-tests/no-such-bart")


class TestAssessWithBart:
    def test_qa_row_gets_prf_model_and_quality_score(self, tiny_bart, scorer):
        requests = [{"rid": "r1", "task": "qa", "text": TGTS[0], "thinking": None, "reference": SRCS[0], "lang": "en",
                     "expect": None, "prompt": "Capital of France?"}]
        row = assess(requests, QualityOptions(bart_checkpoint=str(tiny_bart), device="cpu", max_length=MAX_LENGTH))["r1"]
        p, r, f = scorer.score_prf([SRCS[0]], [TGTS[0]])
        assert row["bartscore"] == pytest.approx(p[0], abs=1e-5)  # the single column is precision, ref → hyp
        assert (row["bartscore_p"], row["bartscore_r"], row["bartscore_f"]) == pytest.approx((p[0], r[0], f[0]), abs=1e-5)
        assert row["bartscore_model"] == str(tiny_bart) and row["bartscore_error"] is None
        assert row["quality_score"] == pytest.approx(math.exp(row["bartscore_f"]))
        assert row["quality_basis"] == "bartscore" and row["chrf"] is not None  # chrF is kept beside it

    def test_empty_answer_takes_the_basis_of_its_task(self, tiny_bart):
        """Its siblings were scored by BARTScore, so the empty answer's 0 is a BARTScore 0, not a chrF 0."""
        base = {"task": "qa", "reference": SRCS[0], "lang": "en", "expect": None, "prompt": "p", "thinking": None}
        rows = assess([dict(base, rid="full", text=TGTS[0]), dict(base, rid="empty", text="")],
                      QualityOptions(bart_checkpoint=str(tiny_bart), device="cpu", max_length=MAX_LENGTH))
        assert rows["full"]["quality_basis"] == "bartscore"
        assert (rows["empty"]["quality_score"], rows["empty"]["quality_basis"]) == (0.0, "bartscore")

    def test_thinking_is_never_scored(self, tiny_bart):
        base = {"task": "summary", "reference": SRCS[0], "lang": "en", "expect": None, "prompt": "p"}
        requests = [dict(base, rid="plain", text="Paris is big.", thinking=None),
                    dict(base, rid="thought", text="Paris is big.", thinking="Long reasoning about Germany " * 20),
                    dict(base, rid="inline", text="<think>Berlin? no.</think>Paris is big.", thinking=None)]
        rows = assess(requests, QualityOptions(bart_checkpoint=str(tiny_bart), device="cpu", max_length=MAX_LENGTH))
        assert rows["plain"]["bartscore_f"] is not None
        assert rows["thought"]["bartscore_f"] == pytest.approx(rows["plain"]["bartscore_f"], abs=1e-6)
        assert rows["inline"]["bartscore_f"] == pytest.approx(rows["plain"]["bartscore_f"], abs=1e-6)
        assert rows["thought"]["len_chars"] == rows["inline"]["len_chars"] == len("Paris is big.")

    def test_missing_checkpoint_leaves_bartscore_empty_and_the_rest_done(self, tiny_bart, tmp_path):
        """English references go to a checkpoint that is missing, Chinese ones to the tiny model."""
        missing = str(tmp_path / "absent-model")
        requests = [
            {"rid": "en", "task": "qa", "text": "Paris.", "thinking": None, "reference": "Paris is the capital.",
             "lang": None, "expect": None, "prompt": "q"},
            {"rid": "zh", "task": "qa", "text": "北京。", "thinking": None, "reference": "北京是中国的首都。",
             "lang": None, "expect": None, "prompt": "q"},
            {"rid": "c", "task": "creative", "text": "A cat sat on a mat.", "thinking": None, "reference": None,
             "lang": "en", "expect": None, "prompt": "poem"},
        ]
        rows = assess(requests, QualityOptions(bart_checkpoint=missing, bart_checkpoint_zh=str(tiny_bart),
                                               device="cpu", max_length=MAX_LENGTH))
        en, zh, creative = rows["en"], rows["zh"], rows["c"]
        assert en["bartscore"] is None and en["bartscore_f"] is None
        # without its checkpoint the English row falls back to chrF; the Chinese one has BARTScore
        assert en["quality_basis"] == "chrf" and en["quality_score"] == pytest.approx(en["chrf"] / 100)
        assert zh["quality_basis"] == "bartscore"
        assert "does not exist" in en["bartscore_error"] and "fetch_checkpoint" in en["bartscore_error"]
        assert en["bartscore_model"] == missing and en["len_tokens"] == 1
        assert zh["bartscore_model"] == str(tiny_bart) and zh["bartscore_f"] < 0 and zh["bartscore_error"] is None
        assert creative["quality_score"] is not None and creative["bartscore_model"] is None

    def test_offline_default_checkpoint_gives_one_clear_error(self, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("BARTSCORE_CHECKPOINT", "quality-tests/no-such-bart")
        requests = [{"rid": f"r{i}", "task": "qa", "text": "x", "thinking": None, "reference": "y", "lang": "en",
                     "expect": None, "prompt": ""} for i in range(3)]
        rows = assess(requests, QualityOptions(device="cpu"))
        errors = {row["bartscore_error"] for row in rows.values()}
        assert len(errors) == 1 and "HF_HUB_OFFLINE" in errors.pop()
        assert all(row["bartscore"] is None and row["len_chars"] == 1 for row in rows.values())

    def test_unavailable_checkpoints_are_one_warning_with_a_cli_fix(self, monkeypatch):
        """Observed: an offline demo logged [error] bartscore_unavailable twice (English and Chinese
        checkpoints) with a Python API as the fix. Now one warning names both, with --no-bart."""
        from structlog.testing import capture_logs

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("BARTSCORE_CHECKPOINT", "quality-tests/no-such-bart")
        monkeypatch.setenv("BARTSCORE_CHECKPOINT_ZH", "quality-tests/no-such-bart-zh")
        requests = [{"rid": f"r{i}", "task": "qa", "text": "x", "thinking": None, "reference": "y", "lang": lang,
                     "expect": None, "prompt": ""} for i, lang in enumerate(("en", "zh"))]
        with capture_logs() as logs:
            rows = assess(requests, QualityOptions(device="cpu"))
        said = [e for e in logs if e["event"] == "bartscore_unavailable"]
        assert len(said) == 1 and said[0]["log_level"] == "warning"
        assert said[0]["checkpoints"] == ["quality-tests/no-such-bart", "quality-tests/no-such-bart-zh"]
        assert "python -m analyzer --no-bart" in said[0]["fix"] and not [e for e in logs if e["log_level"] == "error"]
        assert "python -m analyzer --no-bart" in rows["r0"]["bartscore_error"]  # the reason the report quotes


class TestEntryPoints:
    def test_cli_scores_a_jsonl_file(self, tiny_bart, tmp_path):
        requests = tmp_path / "requests.jsonl"
        lines = [{"rid": "q", "task": "qa", "text": "Paris.", "reference": "Paris is the capital of France.", "lang": "en"},
                 {"rid": "k", "task": "code", "text": "```python\ndef f(x):\n    return x\n```\nO(1)",
                  "expect": {"entry": "f", "tests": "assert f(2) == 2", "complexity": "O(1)"}}]
        requests.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        out = tmp_path / "quality.jsonl"
        proc = subprocess.run([sys.executable, "-m", "analyzer.quality", "--requests", str(requests), "--out", str(out),
                               "--bart-checkpoint", str(tiny_bart), "--device", "cpu", "--max-length", str(MAX_LENGTH),
                               # our own harmless code: bwrap where it works, else run as the user (no system
                               # part needed, so the test runs on a machine without bubblewrap too)
                               "--unsafe-code-tests-without-sandbox"],
                              cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=120)
        assert proc.returncode == 0, proc.stderr
        rows = {row["rid"]: row for row in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
        assert rows["q"]["bartscore_f"] < 0 and rows["q"]["bartscore_model"] == str(tiny_bart)
        assert rows["k"]["code_tests_passed"] is True and rows["k"]["quality_score"] == 1.0

    def test_fetch_checkpoint_saves_a_loadable_copy(self, tiny_bart, tmp_path):
        out = tmp_path / "copy"
        proc = subprocess.run([sys.executable, "-m", "analyzer.quality.fetch_checkpoint", str(tiny_bart), "--out", str(out)],
                              cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=120)
        assert proc.returncode == 0, proc.stderr
        copy = BARTScorer(checkpoint=str(out), device="cpu", max_length=MAX_LENGTH)
        original = BARTScorer(checkpoint=str(tiny_bart), device="cpu", max_length=MAX_LENGTH)
        assert copy.score(SRCS[:2], TGTS[:2]) == pytest.approx(original.score(SRCS[:2], TGTS[:2]), abs=1e-6)

    def test_fetch_checkpoint_offline_exits_2_with_the_fix(self):
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        proc = subprocess.run([sys.executable, "-m", "analyzer.quality.fetch_checkpoint", "quality-tests/no-such-bart"],
                              cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=120, env=env)
        assert proc.returncode == 2 and "hf download quality-tests/no-such-bart" in proc.stderr
