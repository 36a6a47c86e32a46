"""What the model is fed, against the STAR reference's own tokenizer calls: flan's truncation of long inputs
(both protocols) and the BOS tokens of a chat prompt (one by default, two under ``--protocol reference``)."""
from __future__ import annotations

import pytest

from merge_bench.backbones.rehearsal import build_tokenizer, corpus
from merge_bench.evaluation.hf_backend import NewTokensHFLM

IMDB = ("The following is a movie review: '{text}' Please classify its sentiment as either 'positive' or "
        "'negative'.")


@pytest.fixture(scope="module")
def tokenizers():
    text = corpus()
    return {family: build_tokenizer(family, text) for family in ("flan", "llama", "mistral")}


def _lm(tokenizer, backend: str, *, double_bos: bool = False, max_length: int = 512) -> NewTokensHFLM:
    """The HF evaluator's lm-eval model, holding only what its tokenization reads (no weights needed)."""
    if tokenizer.pad_token is None:  # what HFLM's constructor does (lm-eval's configure_pad_token)
        tokenizer.pad_token = tokenizer.eos_token
    lm = NewTokensHFLM.__new__(NewTokensHFLM)
    lm.tokenizer, lm.backend, lm.add_bos_token, lm._max_length = tokenizer, backend, None, max_length
    lm.double_bos = double_bos
    return lm


def test_flan_long_input_keeps_its_start_and_eos_like_the_reference(tokenizers):
    tok = tokenizers["flan"]
    review = " ".join(["the film was long and the plot was thin but the actors were good"] * 170)
    prompt = IMDB.format(text=review)
    full = tok(prompt).input_ids
    assert len(full) > 2000
    # generate_until's call: lm-eval's seq2seq path asks for the last max_length tokens
    ids, mask = _lm(tok, "seq2seq").tok_batch_encode([prompt, "short question"], left_truncate_len=512)
    row = ids[0][mask[0].bool()].tolist()
    reference = tok(prompt, truncation=True).input_ids  # the reference's call: tokenizer max length 512
    assert row == reference
    assert len(row) == 512 and row[:511] == full[:511] and row[-1] == tok.eos_token_id
    # lm-eval's own seq2seq path kept the last 512 tokens: the instruction, not the review's start
    assert full[-512:] != row
    short = ids[1][mask[1].bool()].tolist()
    assert short == tok("short question").input_ids


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_bos_once_by_default_and_twice_under_the_reference(tokenizers, family):
    tok = tokenizers[family]
    chat = tok.apply_chat_template([{"role": "user", "content": "Is it positive or negative? text: 'fine'"}],
                                   tokenize=False, add_generation_prompt=True)
    assert chat.startswith(tok.bos_token)
    default_ids, _ = _lm(tok, "causal").tok_batch_encode([chat], left_truncate_len=2038)
    reference_ids, _ = _lm(tok, "causal", double_bos=True).tok_batch_encode([chat], left_truncate_len=2038)
    bos = tok.bos_token_id
    assert default_ids[0].tolist() == tok(chat, add_special_tokens=False).input_ids
    assert default_ids[0].tolist()[:2] != [bos, bos] and default_ids[0].tolist()[0] == bos
    assert reference_ids[0].tolist() == tok(chat).input_ids  # the reference's tokenizer(formatted_prompt)
    assert reference_ids[0].tolist()[:2] == [bos, bos]


def test_flan_refuses_the_vllm_backend():
    from merge_bench.backbones import get_backbone
    from merge_bench.bench.plan import resolve_runtime

    with pytest.raises(ValueError, match="encoder-decoder, which vLLM does not serve"):
        resolve_runtime("vllm", "cuda", None, get_backbone("flan"))
    assert resolve_runtime("auto", "cuda", None, get_backbone("flan")).backend == "hf"
