"""The tokenizer side of the tiny Qwen2.5-VL: the real model's special tokens, our response tags and the
stock chat template, and ``train_tokenizer``, a byte-level BPE trained locally with Qwen2's pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from preferthinker.response import TAGS as _RESPONSE_TAGS

if TYPE_CHECKING:  # heavy imports stay lazy so `import preferthinker.modeling` is cheap
    import transformers

# Special tokens in the order (and so with the relative ids) of the released Qwen2.5-VL vocabulary.
# The Qwen box/quad/object-ref tokens are left out: nothing in PreferThinker uses them.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # pad (and bos in the model config, as in Qwen)
    "<|im_start|>",
    "<|im_end|>",  # eos: ends every chat turn
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",  # one per merged 28x28 image patch after the processor expands it
    "<|video_pad|>",
)

# Tags of the predict-then-assess response (names owned by `preferthinker.response`), open and close. They are
# ordinary added tokens (not special): each encodes to a single id, and `decode(..., skip_special_tokens=True)`
# keeps them, so rewards can parse decoded text.
FORMAT_TAGS: tuple[str, ...] = tuple(tag for name in _RESPONSE_TAGS for tag in (f"<{name}>", f"</{name}>"))

# Qwen2's pre-tokenisation regex: contractions, letter runs with one optional leading non-letter, single
# digits, punctuation runs with their trailing newlines, newline runs, and whitespace. Paired with a
# byte-level mapping (no regex of its own), it makes every string encodable without an unknown token.
_QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

# The stock Qwen2.5-VL chat template, byte for byte. TRL's SFT `assistant_only_loss` only swaps in its
# training variant (with `{% generation %}` markers) when the processor's template equals this string
# exactly, so do not reformat it. `tests/test_modeling.py` checks it against the copy TRL compares with.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2, word_tokens: Iterable[str] = ()
) -> transformers.PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``Qwen2Tokenizer``.

    The pipeline is Qwen2's: NFC normalisation, Qwen2's pre-tokenisation regex, byte-level mapping of the
    256 byte values (so any string encodes, and ``decode(encode(x)) == unicodedata.normalize("NFC", x)``),
    and a byte-level decoder. Because the tokenizer is a real ``Qwen2Tokenizer``, it reloads through
    ``AutoTokenizer``/``AutoProcessor`` unchanged.

    Token ids: the 256 byte symbols, then the learned merges, then ``QWEN_SPECIAL_TOKENS`` (special; eos is
    ``<|im_end|>``, pad is ``<|endoftext|>``), then ``FORMAT_TAGS`` (ordinary added tokens, one id each), then
    ``word_tokens``.

    ``word_tokens`` are domain terms ("Rose Pink", "Art Deco") added as whole-word tokens: each is one id
    wherever it stands. Byte-level BPE otherwise splits a term by what precedes it (``"Rose`` after a quote
    in a profile block, `` Rose`` after a space in a rationale: different ids), so a model trained from
    scratch would have to learn that the two spellings are the same term before it could compare a
    candidate's term with the profile's. Decoding is unchanged (the text round-trips).

    Args:
        texts: training corpus, one document per item. Consumed once; the same texts (same order) give the
            same tokenizer.
        vocab_size: upper bound on ``len(tokenizer)``, special tokens, tags and word tokens included. A small
            corpus learns fewer merges and yields a smaller vocabulary.
        min_frequency: a pair must occur at least this often to become a merge.
        word_tokens: whole-word tokens to add (order kept, duplicates dropped; none may be empty or start or
            end with whitespace).

    Returns:
        A ``transformers.Qwen2Tokenizer`` (a ``PreTrainedTokenizerFast``).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    words = list(dict.fromkeys(str(w) for w in word_tokens))
    bad = [w for w in words if not w or w != w.strip() or w in QWEN_SPECIAL_TOKENS or w in FORMAT_TAGS]
    if bad:
        raise ValueError(f"word_tokens must be non-empty, unpadded and distinct from the special tokens and tags; got {bad[:5]}")
    n_added = len(QWEN_SPECIAL_TOKENS) + len(FORMAT_TAGS) + len(words)
    if vocab_size < 256 + n_added:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must hold the 256 byte symbols "
            f"plus {n_added} special tokens, tags and word tokens."
        )

    backend = Tokenizer(
        BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_added,
        min_frequency=min_frequency,
        # All 256 byte symbols are in the vocabulary even if the corpus never uses them: no unknown tokens.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator((str(t) for t in texts), trainer=trainer)

    model_json = json.loads(backend.to_str())["model"]
    vocab: dict[str, int] = dict(model_json["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_json["merges"]]
    # Give the special tokens and tags fixed ids right after the BPE vocabulary (as Qwen does), instead of
    # leaving their order to whatever the wrapper registers first.
    for token in (*QWEN_SPECIAL_TOKENS, *FORMAT_TAGS):
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,  # byte-level: nothing is unknown
        bos_token=None,  # Qwen chat prompts carry no bos
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t not in ("<|endoftext|>",)],
        errors="replace",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TAGS])
    # single_word asks the tokenizer not to match inside a longer word; it does not always hold ("Richness"
    # still becomes "Rich" + "ness" pieces), which costs a few tokens, never a wrong decode.
    tokenizer.add_tokens([AddedToken(w, special=False, normalized=False, single_word=True) for w in words])
    return tokenizer
