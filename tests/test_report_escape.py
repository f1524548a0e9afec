"""Hostile model text through the real analyzer (`python -m analyzer --batch`, plots and quality on):
report.md renders as text only, the plots are drawn and stay in plots/, and the terminal sees no
control sequence. The model names, answers and error texts of the batch are the hostile ones."""
from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from markdown_it import MarkdownIt

from demo.figures import format_table, key_figures, read_results
from tests.synth import Req, Spec, constant, Gpu, write_batch
from telemetry.tail import TailState

ROOT = Path(__file__).resolve().parent.parent
MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])

# A model name that is also mathtext ("$…$" would make matplotlib fail), HTML and an ANSI sequence.
EVIL_MODEL = "<img src=x onerror=alert(1)>$x^{$\x1b[31m"
EVIL_ERROR = "<script>alert('err')</script> [link](javascript:alert(2)) ![i](http://a.invalid/p.png) \x1b]0;pwned\x07"
EVIL_ANSWER = ("<script>alert(3)</script> <a href=\"javascript:alert(4)\">x</a> **bold** \x1b[2J "
               "![img](http://a.invalid/i.png) " + "word " * 30)
EVIL_CODE = ("```python\nraise SystemExit(\"<script>alert(5)</script>\\x1b[31m\")\ndef f(x):\n    return x\n```\n"
             "O(1)")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _spec() -> Spec:
    cases = [{"prompt": "Write f(x).", "task": "code", "load": "short",
              "expect": {"entry": "f", "tests": "assert f(2) == 2"}},
             {"prompt": "<script>alert('prompt')</script>", "task": "creative", "load": "short", "lang": "en"}]
    reqs = [Req(1.0, 1.5, model=EVIL_MODEL, task="code", case=0, text=EVIL_CODE, rid="r-code"),
            Req(2.0, 2.6, model=EVIL_MODEL, task="creative", case=1, text=EVIL_ANSWER, rid="r-creative"),
            Req(3.0, 3.4, model="plain:1b", task="creative", case=1, text="a calm and plain answer " * 10,
                rid="r-plain"),
            Req(4.0, 4.2, model=EVIL_MODEL, task="creative", case=1, ok=False, error=EVIL_ERROR, rid="r-failed")]
    return Spec(duration_s=5.0, rate_hz=20.0, gpus=[Gpu(constant(120.0))], requests=reqs, cases=cases,
                batch_id="evil<b>batch</b>")


def test_hostile_text_through_the_analyzer_shows_as_text_everywhere(tmp_path):
    root = tmp_path / "batch"
    write_batch(root, _spec())
    r = subprocess.run([sys.executable, "-m", "analyzer", "--batch", str(root), "--no-progress", "--device", "cpu",
                        "--bart-checkpoint", str(tmp_path / "no-checkpoint")], cwd=ROOT, capture_output=True,
                       timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")[-3000:]
    # Terminal: no control sequence from the batch reaches stdout or stderr.
    assert b"\x1b" not in r.stdout and b"\x1b" not in r.stderr and b"\x07" not in r.stderr

    report = (root / "summary" / "report.md").read_text(encoding="utf-8")
    assert "\x1b" not in report and "\x07" not in report
    parser = _Tags()
    parser.feed(MD.render(report))
    allowed = {"h1", "h2", "p", "blockquote", "strong", "em", "code", "table", "thead", "tbody", "tr", "th", "td",
               "ul", "li", "img"}
    assert {tag for tag, _ in parser.tags} <= allowed
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "href" not in attrs
        if tag == "img":  # only our plots, by relative path, each a file in plots/
            assert attrs["src"].startswith("../plots/") and (root / "summary" / attrs["src"]).resolve().is_file()
    shown = "".join(parser.text)
    # The hostile texts did reach the report, as text (the positive side of the check above).
    assert "<img src=x onerror=alert(1)>$x^{$\\x1b[31m" in shown
    assert "<script>alert('err')</script> [link](javascript:alert(2))" in shown
    assert "evil<b>batch</b>" in shown

    # Plots: drawn despite the mathtext in the model name, and all inside plots/.
    plots = sorted(p.name for p in (root / "plots").iterdir())
    assert "energy_vs_quality_creative.png" in plots and any(p.startswith("power_timeline_") for p in plots)
    assert all((root / "plots" / p).stat().st_size > 1000 for p in plots)

    # The answer itself is kept verbatim in the data (CSV/JSON), for the user to inspect.
    request = json.loads((root / "raw" / "r-creative.json").read_text(encoding="utf-8"))
    assert request["generated_text"] == EVIL_ANSWER

    # The demo's terminal table of the same results.
    table = format_table(key_figures(read_results(root / "summary" / "results.csv")))
    assert "\x1b" not in table and "\\x1b[31m" in table
    assert all(line.count("|") - line.count("\\|") == table.splitlines()[0].count("|") for line in table.splitlines())


def test_log_lines_show_control_sequences_as_text():
    """The real logging set-up in a real process: key=value lines escape, JSON lines keep the exact text."""
    code = ("from shared.logs import configure_logging, get_logger\nimport sys\n"
            "configure_logging(json=sys.argv[1] == 'json')\n"
            "get_logger('t').warning('request_failed\\x1b[2J', model='m\\x1b[31m', error='bad \\x1b]0;x\\x07 end')\n")
    plain = subprocess.run([sys.executable, "-c", code, "plain"], cwd=ROOT, capture_output=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert b"\x1b" not in plain.stderr and b"\x07" not in plain.stderr
    assert b"request_failed\\x1b[2J" in plain.stderr and b"m\\x1b[31m" in plain.stderr
    as_json = subprocess.run([sys.executable, "-c", code, "json"], cwd=ROOT, capture_output=True, timeout=60)
    assert b"\x1b" not in as_json.stderr
    assert json.loads(as_json.stderr.decode().strip().splitlines()[-1])["model"] == "m\x1b[31m"


def test_live_tail_table_shows_a_hostile_gpu_name_as_text():
    st = TailState()
    st.update("tel.gpu", {"v": 1, "src": "s", "seq": 1, "t": 0, "wall": 0, "gpu": 0, "name": "GPU\x1b[2J\r",
                          "power_mw": 1000.0, "errors": ["nvml \x1b[31mfailed"]})
    table = st.render()
    assert "\x1b" not in table and "\r" not in table and "GPU\\x1b[2J\\x0d" in table and "\\x1b[31mfailed" in table
