"""A tiny, randomly initialised BART checkpoint for tests and benchmarks (no download, ~1 s on CPU).

The real code path loads it by directory exactly as it would load facebook/bart-large-cnn: a byte-level
BPE tokenizer trained here with the tokenizers library (BART's special tokens and ids: <s>=0, <pad>=1,
</s>=2, <unk>=3, <mask>=4, and BART's "<s> … </s>" post-processing) wrapped as BartTokenizerFast, and
a BartConfig with two small layers each side. Its scores are meaningless as quality; they exercise
the definition.
"""
from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Binary search halves the interval at every step, so it runs in O(log n) time.",
    "A summary keeps the main points of the article and drops the details.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "Large language models generate text one token at a time.",
    "二分查找每一步把区间减半，时间复杂度为 O(log n)。",
    "北京是中国的首都，上海是最大的城市。",
    "Energy per token is measured in joules; power is measured in watts.",
]
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_tiny_bart(out_dir: Path, vocab_size: int = 400, d_model: int = 32, layers: int = 2,
                    max_positions: int = 256, seed: int = 0, model_vocab_size: int | None = None,
                    heads: int = 2) -> Path:
    """Write a tiny BART model + tokenizer to ``out_dir`` (save_pretrained) and return the directory.

    ``model_vocab_size`` larger than the tokenizer's (e.g. 50265, bart-large's) gives the model a
    full-size embedding and LM head for speed measurements; the extra ids are simply never used."""
    import torch
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import BartConfig, BartForConditionalGeneration, BartTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                            show_progress=False)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    tokenizer = BartTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                  sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                  mask_token="<mask>", model_max_length=max_positions)
    ffn_dim = 4 * d_model if d_model >= 256 else 2 * d_model  # BART's ratio at real sizes
    config = BartConfig(vocab_size=max(len(tokenizer), model_vocab_size or 0), d_model=d_model,
                        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                        decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim, decoder_ffn_dim=ffn_dim,
                        max_position_embeddings=max_positions, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2)
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config)
    # Random init would make final_logits_bias zero; give it values so the test sees it is applied.
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 0.5)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
