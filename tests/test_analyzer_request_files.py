"""raw/<rid>.json left as it is, not even built, on a re-analysis whose inputs are those that wrote it
(analyzer.outputs.RequestFiles): the recording and lookback, the code, the options, the request's
quality scores. Anything else — a changed option, a deleted, edited or truncated file, a lost index —
writes the file again, with the bytes a fresh analysis writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

from analyzer import cli, outputs, pipeline, stream
from shared.recording import read_recording
from tests import synth as S

ARGV = ["--no-quality", "--no-plots", "--no-progress"]


def batch(tmp_path: Path, name: str = "b") -> Path:
    return S.write_batch(tmp_path / name, S.tiny_spec()).root


def analyse(root: Path, *extra: str) -> dict[str, bytes]:
    assert cli.main(["--batch", str(root), *ARGV, *extra]) == 0
    return {f.name: f.read_bytes() for f in sorted((root / "raw").glob("*.json"))}


def ident(p: Path) -> tuple:
    st = p.stat()
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def test_kept_when_unchanged_written_again_when_an_option_or_the_file_changed(tmp_path):
    root = batch(tmp_path)
    first = analyse(root)
    raw = root / "raw"
    index = outputs.request_index(raw)
    assert set(index) == set(first) and len(first) > 3
    before = {name: ident(raw / name) for name in first}
    assert analyse(root) == first                                    # the same inputs: no file touched
    assert {name: ident(raw / name) for name in first} == before

    fresh = batch(tmp_path, "fresh")                                 # what a first analysis writes with 200 W
    want = analyse(fresh, "--cpu-tdp-w", "200")
    assert want != first
    assert analyse(root, "--cpu-tdp-w", "200") == want               # an option changed: every file it changes

    names = sorted(want)
    (raw / names[0]).unlink()                                        # deleted
    edited = raw / names[1]
    st = edited.stat()
    text = edited.read_bytes()
    edited.write_bytes(text.replace(b'"ok": true', b'"ok": fals', 1) if b'"ok": true' in text
                       else text[:-2] + b"x\n")                      # edited, its size and times put back
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert edited.stat().st_size == st.st_size and edited.read_bytes() != want[names[1]]
    (raw / names[2]).write_bytes(b"{}")                              # another length
    assert analyse(root, "--cpu-tdp-w", "200") == want

    (raw / outputs.REQUEST_KEYS).unlink()                            # no index: built and written as before
    assert analyse(root, "--cpu-tdp-w", "200") == want
    assert outputs.request_index(raw).keys() == want.keys()
    (raw / outputs.REQUEST_KEYS).write_text('{"files": {}}')          # damaged (or an older version's JSON)
    assert analyse(root, "--cpu-tdp-w", "200") == want and outputs.request_index(raw).keys() == want.keys()


def test_only_a_file_whose_inputs_or_bytes_changed_is_built(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    built: list[str] = []

    def build(rid: str):
        built.append(rid)
        return {"rid": rid, "power_w": [1.5] * 20}

    def run(samples_key: str | None, own: dict[str, str | None]) -> None:
        files = outputs.RequestFiles(raw, samples_key)
        for rid, key in own.items():
            files.write(raw / f"{rid}.json", key, lambda rid=rid: build(rid))
        files.close()

    run("rec", {"a": "k", "b": "k", "c": None})
    assert built == ["a", "b", "c"]
    assert (raw / "a.json").read_text() == outputs.json_text(build("a"))
    built.clear()
    run("rec", {"a": "k", "b": "k", "c": None})                      # c has no key: always built
    assert built == ["c"]
    built.clear()
    run("rec", {"a": "k", "b": "other", "c": None})                  # its own inputs changed
    assert built == ["b", "c"]
    built.clear()
    run("another recording", {"a": "k", "b": "other"})               # the recording (or lookback) changed
    assert built == ["a", "b"]
    built.clear()
    run("rec", {"a": "k", "b": "other"})
    st = (raw / "a.json").stat()
    os.utime(raw / "a.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # other times (a copied batch), same bytes
    (raw / "b.json").write_text((raw / "b.json").read_text().replace("1.5", "2.5"))  # same size, other bytes
    built.clear()
    run("rec", {"a": "k", "b": "other"})
    assert built == ["b"] and (raw / "b.json").read_text() == outputs.json_text(build("b"))
    built.clear()
    run(None, {"a": "k", "b": "other"})                              # a recording still being written: no key
    assert built == ["a", "b"] and not (raw / outputs.REQUEST_KEYS).exists()


def analysis(tmp_path: Path, **opts) -> pipeline.Analysis:
    path = tmp_path / "k" / "raw" / "stream.msgpack"
    if not path.exists():
        S.write_batch(tmp_path / "k", S.tiny_spec())
    _, items, problem = read_recording(path)
    return pipeline.analyze(stream.build(items), pipeline.Options(**opts), recording_problem=problem)


def test_every_option_and_the_quality_scores_are_in_a_request_key(tmp_path):
    plain = analysis(tmp_path, quality=False)
    rid = next(iter(plain.request_json))
    assert analysis(tmp_path, quality=False).request_json.key(rid) == plain.request_json.key(rid)
    assert analysis(tmp_path, quality=False, progress=True).request_json.key(rid) == plain.request_json.key(rid)
    for changed in ({"cpu_tdp_w": 100.0}, {"idle_baseline": True}, {"server_gpus": "all"}, {"slab_s": 5.0},
                    {"goodput": {"ttft": 500.0}}, {"metric_percentiles": (50.0,)}):
        assert analysis(tmp_path, quality=False, **changed).request_json.key(rid) != plain.request_json.key(rid)
    fields = {f.name for f in pipeline.dataclasses.fields(pipeline.Options)}
    assert pipeline._NOT_IN_REQUEST_JSON < fields                     # (a renamed option is not left out unseen)

    def scorer(score):
        return lambda reqs, options, progress=False: {r["rid"]: {"quality_score": score} for r in reqs}
    ok = next(r["rid"] for r in plain.results if r["status"] == "ok")
    one, other = (analysis(tmp_path, assess=scorer(s)).request_json for s in (0.5, 0.6))
    assert one.key(ok) != other.key(ok)
    assert one.key(ok) == analysis(tmp_path, assess=scorer(0.5)).request_json.key(ok)


def test_a_locked_request_file_is_written_again_once_free(tmp_path, monkeypatch):
    """A request file another program holds (Windows) keeps its old bytes; the next run writes it."""
    root = batch(tmp_path)
    want = analyse(root, "--cpu-tdp-w", "200")
    analyse(root)
    name = sorted(want)[0]
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == name:
            raise PermissionError(13, "in use", str(dst))
        return real(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", replace)
    assert cli.main(["--batch", str(root), *ARGV, "--cpu-tdp-w", "200"]) == cli.EXIT_OUTPUT_LOCKED
    assert (root / "raw" / name).read_bytes() != want[name]
    beside = root / "raw" / name.replace(".json", ".new.json")
    assert beside.read_bytes() == want[name]                     # the new version went beside it
    beside.unlink()
    monkeypatch.setattr(os, "replace", real)
    assert analyse(root, "--cpu-tdp-w", "200") == want


def test_the_index_is_read_and_written_an_entry_at_a_time(tmp_path):
    """request_json.keys read as the files come (the usual order: nothing held; out of order: the entries
    passed held until asked), written through a temporary file with the bytes msgpack.packb gives the
    whole map, left untouched when unchanged; a damaged tail keeps the entries before it."""
    import msgpack

    raw = tmp_path / "raw"
    raw.mkdir()
    names = [f"r{k}.json" for k in range(40)]

    def run(order: list[str], key: str = "k") -> list[str]:
        built: list[str] = []
        files = outputs.RequestFiles(raw, "rec")
        for name in order:
            files.write(raw / name, key, lambda name=name: built.append(name) or {"rid": name})
        files.close()
        return built

    assert run(names) == names
    index = raw / outputs.REQUEST_KEYS
    entries = outputs._read_index(index)
    assert list(entries) == names                                     # in the order written
    assert index.read_bytes() == msgpack.packb({"files": entries}, use_bin_type=True)
    same = ident(index)
    assert run(names) == [] and ident(index) == same                  # unchanged: not written again
    old = outputs._OldIndex(index)
    assert old.pop(names[5]) == entries[names[5]] and len(old._passed) == 5   # out of order: those passed held
    assert [old.pop(n) for n in names[:5]] == [entries[n] for n in names[:5]] and not old._passed
    assert old.pop("missing.json") is None and len(old._passed) == len(names) - 6  # read to the end
    assert old.pop(names[6]) == entries[names[6]] and old.pop(names[6]) is None    # each given once
    old.close()
    assert run(names[::-1]) == []                                     # any order finds every entry
    assert list(outputs._read_index(index)) == names[::-1]
    data = index.read_bytes()
    index.write_bytes(data[:len(data) // 2])                          # cut mid-way: the first half kept
    built = run(names[::-1])
    assert built and len(built) < len(names) and built == names[::-1][len(names) - len(built):]
    assert run(names[::-1], key="other") == names[::-1]               # another key: every file built
