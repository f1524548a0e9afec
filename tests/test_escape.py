"""shared.escape: model text shows as text wherever it lands. Markdown is rendered with a real CommonMark
renderer (markdown-it-py, tables and strikethrough on, raw HTML allowed as GitHub-like viewers do), and
the properties are fuzzed with hypothesis."""
from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from hypothesis import example, given, strategies as st
from markdown_it import MarkdownIt

from shared.escape import (html_attr, html_text, html_url, json_line, md_inline, mpl_text, safe_filename,
                           terminal_text)

MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "<javascript:alert(1)>",
    "![pixel](http://attacker.invalid/p.png)",
    "<a href='javascript:alert(1)'>x</a>",
    "**bold** _em_ `code` ~~gone~~ | cell break",
    "# heading",
    "1. list",
    "- item",
    "[ref]: javascript:alert(1)",
    "&lt;script&gt; &amp; &#60;",
    "\x1b[31mred\x1b[0m\x1b]0;title\x07",
    "line1\nline2\r\n\n## h2",
    "<!-- comment --> <style>*{}</style>",
    "\\<b>bold</b>",
]
# Text the fuzzer draws: Markdown and HTML punctuation, letters, spaces, controls, CJK, bidi.
TEXT = st.text(alphabet=st.sampled_from(list("<>&\"'`*_[]()!#|~$-+=.:;/\\ {}^%@0123456789abcXYZ\x1b\x07\r\t")
                                        + ["\u202e", "你", "é", "\x9b", "\u2028"]), max_size=60)


def _cell(md_text: str) -> str:
    """The HTML of a one-cell table holding ``md_text``."""
    out = MD.render(f"| h |\n|---|\n| {md_text} |\n")
    cells = re.findall(r"<td>(.*?)</td>", out, re.S)
    assert len(cells) == 1, out  # the cell did not split into more cells nor break the table
    return cells[0]


def _shown(text: str) -> str:
    """What a reader should see: the text on one line, controls as visible escapes, spaces collapsed."""
    return " ".join(terminal_text(re.sub(r"[\t\n\r]+", " ", text)).split())


def _no_markup(rendered: str) -> None:
    assert "<" not in rendered.replace("&lt;", ""), rendered  # no element at all: no script, img, a, style


class TestMarkdown:
    @pytest.mark.parametrize("text", HOSTILE)
    def test_hostile_text_renders_as_the_same_text_and_nothing_else(self, text):
        cell = _cell(md_inline(text))
        _no_markup(cell)
        assert " ".join(html.unescape(cell).split()) == _shown(text)

    def test_positive_control_raw_text_would_inject(self):
        """Without md_inline the same renderer makes a script element, an image and a javascript: link."""
        raw = (_cell("<script>alert(1)</script>") + MD.render("![p](http://a.invalid/p.png)")
               + MD.render("<a href='javascript:x'>a</a>"))
        assert "<script>" in raw and "<img" in raw and "href='javascript:" in raw

    def test_in_a_list_item_block_markers_stay_text(self):
        for text in ("# h", "- x", "12. y", "> q", "=== z"):
            out = MD.render(f"- {md_inline(text)}\n")
            assert out == f"<ul>\n<li>{html.escape(text, quote=False)}</li>\n</ul>\n", (text, out)

    @given(TEXT)
    @example("a\\")
    @example("&#x3c;script")
    def test_fuzz_any_text_is_one_cell_of_its_own_text(self, text):
        cell = _cell(md_inline(text))
        _no_markup(cell)
        assert " ".join(html.unescape(cell).split()) == _shown(text)


class TestTerminal:
    def test_ansi_and_controls_are_shown_not_obeyed(self):
        assert terminal_text("\x1b[31mred\x1b[0m\r\x08\x07") == "\\x1b[31mred\\x1b[0m\\x0d\\x08\\x07"
        assert terminal_text("a\u202eb\nc") == "a\\u202eb\\nc"
        assert terminal_text("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"
        assert terminal_text(None) == "" and terminal_text(3) == "3"

    @given(st.text(max_size=80))
    def test_fuzz_no_control_character_survives(self, text):
        out = terminal_text(text)
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", out)


class TestJsonLine:
    """tail --json and the quality CLI: valid JSON with the same values, no raw C1 or bidi characters
    (json.dumps escapes C0 but leaves those as they are: the positive control)."""

    @given(st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=4))
    @example({"name": "GPU\x9b31m\u202eevil\x1b[0m", "中文": "答案"})
    def test_same_values_and_no_control_character(self, obj):
        import json

        line = json_line(obj)
        assert json.loads(line) == obj
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", line)

    def test_plain_json_dumps_would_pass_them_through(self):
        import json

        raw = json.dumps({"x": "\x9b31m\u202e"}, ensure_ascii=False)
        assert "\x9b" in raw and "\u202e" in raw and "\x9b" not in json_line({"x": "\x9b31m\u202e"})
        assert json_line({"x": "中文"}) == '{"x": "中文"}'  # readable text stays as it is


class TestHtml:
    @pytest.mark.parametrize("text", HOSTILE)
    def test_text_and_attribute_hold_no_markup(self, text):
        for out in (html_text(text), html_attr(text)):
            assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
            assert "\x1b" not in out
        assert html.unescape(html_text(text)) == terminal_text(text, keep_newlines=True)

    @pytest.mark.parametrize("url", ["javascript:alert(1)", "JavaScript:alert(1)", " java\tscript:alert(1)",
                                     "data:text/html,<script>", "vbscript:x", "file:///etc/passwd", "c:evil"])
    def test_urls_other_than_http_or_relative_become_hash(self, url):
        assert html_url(url) == "#"

    @pytest.mark.parametrize("url, out", [("../plots/a.png", "../plots/a.png"),
                                          ("https://x.invalid/?a=1&b=2", "https://x.invalid/?a=1&amp;b=2"),
                                          ('p"><script>.png', "p&quot;&gt;&lt;script&gt;.png")])
    def test_http_and_relative_urls_are_kept_and_escaped(self, url, out):
        assert html_url(url) == out


class TestFileNamesAndPlots:
    @pytest.mark.parametrize("name", ["../../etc/passwd", "..", ".", "", "a/b\\c:d", "\x00x", "代码", "code"])
    def test_file_name_stays_in_its_dir(self, name, tmp_path):
        safe = safe_filename(name)
        assert safe and not safe.startswith(".") and not set(safe) & set("/\\:\x00")
        assert (tmp_path / f"p_{safe}.png").resolve().parent == tmp_path.resolve()

    def test_ordinary_names_are_kept_and_changed_ones_stay_apart(self):
        assert safe_filename("code") == "code" and safe_filename("代码") == "代码"
        assert safe_filename("a/b") != safe_filename("a:b")

    @given(st.text(max_size=40))
    def test_fuzz_file_name(self, name):
        safe = safe_filename(name)
        assert safe and not safe.startswith(".") and "/" not in safe and "\\" not in safe and "\x00" not in safe
        assert Path(safe).name == safe

    def test_matplotlib_label_with_dollars_renders(self, tmp_path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.set_title("$x^{$")  # positive control: raw text is parsed as mathtext and fails
        with pytest.raises(ValueError):
            fig.savefig(tmp_path / "raw.png")
        ax.set_title(mpl_text("$x^{$ costs $5 \x1b[31m"))
        fig.savefig(tmp_path / "escaped.png")
        plt.close(fig)
        assert (tmp_path / "escaped.png").stat().st_size > 1000
