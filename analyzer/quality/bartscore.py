"""BARTScore (Yuan et al., 2021), same definition as the paper's reference ``bart_score.py``, faster.

    score(src, tgt) = −(Σ NLL of the tgt tokens given src, pad ignored) / (tgt tokens in the attention mask)

from ``BartForConditionalGeneration``: src and tgt are tokenised separately (special tokens added,
truncated to ``max_length``), the decoder reads tgt shifted right (decoder_start_token_id first) and
predicts every tgt token including ``<s>`` and ``</s>``. It is an average log-likelihood, ≤ 0; higher
is better.

Faster than the reference, same numbers: texts are tokenised once without padding, pairs are
batched by length (little padding), ``torch.inference_mode``, the LM head runs only on real target
tokens, and bf16 (fp16 where bf16 is missing) on CUDA. Results come back in input order.

torch/transformers are imported inside functions only, so importing this module stays light.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from analyzer.quality.options import DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT_ZH  # noqa: F401 - re-exported
from shared import timebase
from shared.logs import get_logger

log = get_logger("quality.bartscore")

_HUB_PROBE_TIMEOUT_S = 3.0


class BartScoreUnavailable(RuntimeError):
    """The checkpoint could not be loaded; the message says why and how to fix it."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when the user asked for no network (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def fix_hint(checkpoint: str) -> str:
    """The exact commands that make ``checkpoint`` available offline."""
    return (f"Fix: on a machine with network run `python -m analyzer.quality.fetch_checkpoint {checkpoint} "
            f"--out models/{checkpoint.replace('/', '--')}` and set BARTSCORE_CHECKPOINT (BARTSCORE_CHECKPOINT_ZH "
            f"for Chinese) to that directory; or fill the Hugging Face cache with `hf download {checkpoint}`; "
            "or run without BARTScore: python -m analyzer --no-bart (from the collector: --analyzer-args \"--no-bart\").")


def _looks_like_path(checkpoint: str) -> bool:
    # A hub id is "name" or "org/name"; anything else with separators is meant as a directory.
    return (Path(checkpoint).expanduser().is_absolute() or checkpoint.startswith((".", "~"))
            or "\\" in checkpoint or checkpoint.count("/") > 1)


def _hub_reachable(timeout_s: float = _HUB_PROBE_TIMEOUT_S) -> bool:
    """A quick TCP probe of the hub endpoint, so a machine without network fails in seconds, not minutes."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s):
            return True
    except OSError:
        return False


def _load_pair(source: str, local_only: bool):
    from transformers import AutoTokenizer, BartForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    model = BartForConditionalGeneration.from_pretrained(source, local_files_only=local_only)
    return tokenizer, model


def load_checkpoint(checkpoint: str):
    """(tokenizer, model) from a local directory or a hub id; BartScoreUnavailable with the fix otherwise.

    A directory is read as is. A hub id is taken from the local cache first; the network is tried
    only when HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE are unset and the hub answers a 3 s probe."""
    local = Path(checkpoint).expanduser()
    if local.is_dir():
        try:
            return _load_pair(str(local), local_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear message
            raise BartScoreUnavailable(f"BARTScore checkpoint directory '{checkpoint}' could not be loaded "
                                       f"({type(exc).__name__}: {exc}). It must hold a BART model and tokenizer saved "
                                       f"with save_pretrained. {fix_hint(DEFAULT_CHECKPOINT)}") from exc
    if _looks_like_path(checkpoint):
        raise BartScoreUnavailable(f"BARTScore checkpoint directory '{checkpoint}' does not exist. "
                                   f"{fix_hint(DEFAULT_CHECKPOINT)}")
    try:
        return _load_pair(checkpoint, local_only=True)
    except Exception as cached_exc:  # noqa: BLE001 - not in the cache (or a broken cache entry)
        if hub_offline():
            raise BartScoreUnavailable(f"BARTScore checkpoint '{checkpoint}' is not in the local Hugging Face cache "
                                       f"and HF_HUB_OFFLINE is set. {fix_hint(checkpoint)}") from cached_exc
    if not _hub_reachable():
        raise BartScoreUnavailable(f"BARTScore checkpoint '{checkpoint}' is not in the local Hugging Face cache and "
                                   f"the hub cannot be reached (no network). {fix_hint(checkpoint)}")
    try:
        return _load_pair(checkpoint, local_only=False)
    except Exception as exc:  # noqa: BLE001
        raise BartScoreUnavailable(f"BARTScore checkpoint '{checkpoint}' could not be downloaded "
                                   f"({type(exc).__name__}: {exc}). {fix_hint(checkpoint)}") from exc


def resolve_device(device: str | None) -> str:
    """``device`` as given, else 'cuda' when torch sees a GPU, else 'cpu'."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}") from None


def plan_batches(src_lens: list[int], tgt_lens: list[int], batch_size: int, min_fill: float) -> list[list[int]]:
    """Group pair indices into batches: longest first, at most ``batch_size`` pairs, and a new batch
    whenever padding would leave less than ``min_fill`` of the padded src+tgt cells real tokens.

    Pure; every index appears exactly once."""
    if len(src_lens) != len(tgt_lens):
        raise ValueError(f"src_lens and tgt_lens differ in length: {len(src_lens)} vs {len(tgt_lens)}")
    order = sorted(range(len(src_lens)), key=lambda i: (src_lens[i] + tgt_lens[i], tgt_lens[i]), reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    real = max_src = max_tgt = 0
    for i in order:
        c_real, c_src, c_tgt = real + src_lens[i] + tgt_lens[i], max(max_src, src_lens[i]), max(max_tgt, tgt_lens[i])
        fill = c_real / ((len(current) + 1) * (c_src + c_tgt)) if c_src + c_tgt else 1.0
        if current and (len(current) >= batch_size or fill < min_fill):
            batches.append(current)
            current, real, max_src, max_tgt = [i], src_lens[i] + tgt_lens[i], src_lens[i], tgt_lens[i]
        else:
            current.append(i)
            real, max_src, max_tgt = c_real, c_src, c_tgt
    if current:
        batches.append(current)
    return batches


class BARTScorer:
    """BARTScore with one loaded checkpoint.

    ``checkpoint``: hub id or directory (default facebook/bart-large-cnn); ``device``: None = cuda
    when available else cpu; ``max_length``: truncation of src and tgt in tokens (1024 as in the
    reference); ``batch_size``: at most this many pairs per forward pass; ``dtype``: auto = bf16/fp16
    on CUDA, float32 on CPU; ``min_fill``: the least share of real (not padding) tokens in a batch,
    default 0.9 on CPU (batching saves little compute there, padding costs fully) and 0.6 on CUDA."""

    def __init__(self, checkpoint: str | None = None, device: str | None = None, max_length: int = 1024,
                 batch_size: int = 8, dtype: str = "auto", min_fill: float | None = None):
        if min_fill is not None and not 0 <= min_fill <= 1:
            raise ValueError(f"min_fill must be between 0 and 1, got {min_fill}")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.checkpoint = checkpoint or DEFAULT_CHECKPOINT
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.min_fill = min_fill if min_fill is not None else (0.6 if self.device.startswith("cuda") else 0.9)
        self.pairs_scored = 0  # distinct pairs run through the model so far (duplicates are scored once)
        started = timebase.now_s()
        self.tokenizer, model = load_checkpoint(self.checkpoint)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, positions)  # longer inputs would index past the position table
        self.pad_id = config.pad_token_id if config.pad_token_id is not None else self.tokenizer.pad_token_id
        self.start_id = config.decoder_start_token_id
        if self.pad_id is None or self.start_id is None:
            raise BartScoreUnavailable(f"BARTScore checkpoint '{self.checkpoint}' has no pad_token_id or "
                                       "decoder_start_token_id in its config; it is not a usable BART model.")
        log.info("bartscore_loaded", checkpoint=self.checkpoint, device=self.device, dtype=str(self.dtype),
                 max_length=self.max_length, load_s=round(timebase.now_s() - started, 2))

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, special tokens added, truncated to max_length, no padding."""
        return [list(ids) for ids in self.tokenizer(list(texts), max_length=self.max_length, truncation=True)["input_ids"]]

    def _pad(self, rows: list[list[int]]):
        import torch

        ids = torch.full((len(rows), max(len(r) for r in rows)), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _score_batch(self, src_rows: list[list[int]], tgt_rows: list[list[int]]) -> list[float]:
        import torch
        import torch.nn.functional as F
        from transformers.models.bart.modeling_bart import shift_tokens_right

        src, src_mask = self._pad(src_rows)
        tgt, tgt_mask = self._pad(tgt_rows)
        decoder_in = shift_tokens_right(tgt, self.pad_id, self.start_id)
        # The decoder is causal, so right-padding the targets leaves every real position unchanged.
        hidden = self.model.model(input_ids=src, attention_mask=src_mask, decoder_input_ids=decoder_in,
                                  use_cache=False).last_hidden_state
        keep = tgt != self.pad_id  # the reference's NLLLoss(ignore_index=pad): only these tokens count
        logits = self.model.lm_head(hidden[keep]) + self.model.final_logits_bias[0]
        nll = F.cross_entropy(logits.float(), tgt[keep], reduction="none")
        per_row = torch.zeros(len(src_rows), dtype=torch.float32, device=nll.device)
        row_of_token = torch.arange(len(src_rows), device=keep.device).unsqueeze(1).expand_as(keep)[keep]
        per_row.index_add_(0, row_of_token, nll)
        return (-(per_row / tgt_mask.sum(dim=1).float())).tolist()

    def score_ids(self, src_ids: list[list[int]], tgt_ids: list[list[int]], batch_size: int | None = None,
                  progress: bool = False) -> list[float]:
        """BARTScore for pre-tokenised pairs, in input order."""
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"srcs and tgts differ in length: {len(src_ids)} vs {len(tgt_ids)}")
        size = batch_size or self.batch_size
        # Repeated runs often produce the same answer for the same reference: score each pair once.
        unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        slot = [unique.setdefault((tuple(a), tuple(b)), len(unique)) for a, b in zip(src_ids, tgt_ids)]
        pairs = list(unique)
        unique_scores = self._score_unique([list(a) for a, _ in pairs], [list(b) for _, b in pairs], size, progress)
        return [unique_scores[i] for i in slot]

    def _score_unique(self, src_ids: list[list[int]], tgt_ids: list[list[int]], size: int, progress: bool) -> list[float]:
        import torch

        # Longest first: the first batch shows an out-of-memory at once, and neighbours pad little.
        chunks = plan_batches([len(r) for r in src_ids], [len(r) for r in tgt_ids], size, self.min_fill)
        scores: list[float | None] = [None] * len(src_ids)
        self.pairs_scored += len(src_ids)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="BARTScore", unit="batch")
        with torch.inference_mode():
            for chunk in chunks:
                for i, value in zip(chunk, self._score_batch([src_ids[i] for i in chunk], [tgt_ids[i] for i in chunk])):
                    scores[i] = value
        return scores  # type: ignore[return-value]

    def score(self, srcs: list[str], tgts: list[str], batch_size: int | None = None, progress: bool = False) -> list[float]:
        """BARTScore(src → tgt) = average log-likelihood of each tgt given its src, in input order."""
        if len(srcs) != len(tgts):
            raise ValueError(f"srcs and tgts differ in length: {len(srcs)} vs {len(tgts)}")
        if not srcs:
            return []
        return self.score_ids(self.encode(srcs), self.encode(tgts), batch_size, progress)

    def score_prf(self, refs: list[str], hyps: list[str], batch_size: int | None = None, progress: bool = False,
                  f_mean: str = "arithmetic") -> tuple[list[float], list[float], list[float]]:
        """(precision, recall, F) per pair, as in the paper: precision = score(ref → hyp), recall =
        score(hyp → ref), F = their arithmetic mean (the paper's and reference README's definition);
        ``f_mean="harmonic"`` gives 2PR/(P+R) instead. Both directions run in one sorted pass."""
        if f_mean not in ("arithmetic", "harmonic"):
            raise ValueError(f"f_mean must be 'arithmetic' or 'harmonic', got {f_mean!r}")
        if len(refs) != len(hyps):
            raise ValueError(f"refs and hyps differ in length: {len(refs)} vs {len(hyps)}")
        if not refs:
            return [], [], []
        ref_ids, hyp_ids = self.encode(refs), self.encode(hyps)
        both = self.score_ids(ref_ids + hyp_ids, hyp_ids + ref_ids, batch_size, progress)
        p, r = both[:len(refs)], both[len(refs):]
        if f_mean == "arithmetic":
            f = [(a + b) / 2 for a, b in zip(p, r)]
        else:
            f = [2 * a * b / (a + b) if (a + b) != 0 else 0.0 for a, b in zip(p, r)]
        return p, r, f
