"""The GPU files of the columnar copy (analyzer.gpu_store): Spill's row groups and what it holds."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from analyzer import gpu_store, parquet_parts
from shared import messages as M


def test_spill_writes_full_row_groups_but_the_last_and_holds_less_than_a_group(tmp_path, monkeypatch):
    """Chunks of any size (two sources, three GPUs, interleaved) become files whose row groups are all
    ROW_GROUP rows but the last, each noted with its stamps' range; between chunks a GPU's buffer holds
    less than a group; each file in parts of PART_GROUPS groups; read back, the rows are the chunks' in
    their order, value for value."""
    monkeypatch.setattr(gpu_store, "ROW_GROUP", 64)
    monkeypatch.setattr(parquet_parts, "PART_GROUPS", 2)
    rng = np.random.default_rng(7)
    n = 2000
    cols = {"src": rng.integers(0, 2, n).astype(np.int32), "gpu": rng.integers(0, 2, n) + 0,
            "t": 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 10_000_000 + rng.integers(0, 9, n),
            "seq": np.arange(n, dtype=np.int64), "idx": np.arange(n, dtype=np.int64),
            "power_mw": rng.uniform(0, 3e5, n)}
    cols["gpu"][cols["src"] == 1] = 5  # the other source has one GPU
    spill = gpu_store.Spill(tmp_path)
    cuts = np.unique(np.concatenate([[0, n], rng.integers(1, n, 40)]))
    for a, b in zip(cuts[:-1], cuts[1:]):
        assert spill(M.TEL_GPU, {k: v[a:b] for k, v in cols.items()})
        assert all(rows < gpu_store.ROW_GROUP for rows in spill._rows.values())
    files = spill.close()
    assert sorted((f["src"], f["gpu"]) for f in files) == [(0, 0), (0, 1), (1, 5)]
    for f in files:
        mine = (cols["src"] == f["src"]) & (cols["gpu"] == f["gpu"])
        metas = [pq.read_metadata(tmp_path / part) for part in f["parts"]]
        assert f["parts"][0] == f["file"] and len(f["parts"]) == -(-len(f["groups"]) // 2) > 1
        assert [m.num_row_groups for m in metas[:-1]] == [2] * (len(metas) - 1) and metas[-1].num_row_groups in (1, 2)
        sizes = [m.row_group(g).num_rows for m in metas for g in range(m.num_row_groups)]
        assert sizes == [g[2] for g in f["groups"]] and sum(sizes) == f["rows"] == mine.sum()
        assert set(sizes[:-1]) == {64} and 0 < sizes[-1] <= 64
        t, at = cols["t"][mine], np.cumsum([0, *sizes])
        assert [g[:2] for g in f["groups"]] == [[int(t[i:j].min()), int(t[i:j].max())] for i, j in zip(at, at[1:])]
    back = gpu_store.read_all(tmp_path, files)
    assert sorted(back) == sorted(cols)
    for k, v in cols.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
