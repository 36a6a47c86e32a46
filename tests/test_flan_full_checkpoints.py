"""Flan's full fine-tuned checkpoints (issue 11) on the rehearsal mirror: their LoRA row is θ_0 + τ on
the targeted matrices, which must be the checkpoint itself; and seq2seq generation writes at most
max_gen_toks new tokens."""
from __future__ import annotations

import pytest
import torch

from rehearsal import rehearsal_env  # noqa: F401  (a fixture)

from merge_bench.backbones import get_backbone, resolve


@pytest.fixture
def flan(rehearsal_env, monkeypatch):
    for key, value in rehearsal_env("flan").items():
        monkeypatch.setenv(key, value)
    bb = get_backbone("flan")
    return bb, resolve(bb.base_id, kind="base")


def _logits(model, tok, text: str) -> torch.Tensor:
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        return model(**enc, decoder_input_ids=torch.tensor([[0, 5, 7, 9]])).logits


def test_the_lora_row_of_a_full_checkpoint_is_the_checkpoint(flan):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from merge_bench.evaluation.hf_backend import HFEvaluator
    from merge_bench.evaluation.tasks import task_manager

    bb, base_dir = flan
    ref = bb.adapters["imdb"]
    assert ref.kind == "full"
    checkpoint = resolve(ref.id, kind="full")
    tok = AutoTokenizer.from_pretrained(base_dir)
    direct = AutoModelForSeq2SeqLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    evaluator = HFEvaluator(bb, base_dir, task_manager(), device="cpu")
    before = _logits(evaluator.model, tok, "the movie was great")
    with evaluator.lora(checkpoint, kind=ref.kind, targets=ref.targets):
        tuned = _logits(evaluator.model, tok, "the movie was great")
    after = _logits(evaluator.model, tok, "the movie was great")
    expected = _logits(direct, tok, "the movie was great")
    assert (before - expected).abs().max() > 1e-3  # the checkpoint is a different model from the base
    # Equal up to float32 rounding of θ_0 + (θ_ft − θ_0) (weights within 1e-9), amplified by logits of ~70.
    torch.testing.assert_close(tuned, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after, before, rtol=0, atol=0)  # the base is restored exactly


def test_seq2seq_generation_stops_at_max_gen_toks_new_tokens(flan):
    from merge_bench.evaluation.hf_backend import HFEvaluator
    from merge_bench.evaluation.tasks import task_manager

    bb, base_dir = flan
    evaluator = HFEvaluator(bb, base_dir, task_manager(), device="cpu")
    prompt = evaluator.lm.tokenizer(["a long prompt " * 20], return_tensors="pt")
    # What lm-eval's generate_until passes: len(prompt) + max_gen_toks.
    out = evaluator.lm._model_generate(context=prompt.input_ids, attention_mask=prompt.attention_mask,
                                       max_length=prompt.input_ids.shape[1] + 10, stop=[], do_sample=False)
    assert prompt.input_ids.shape[1] > 40 and out.shape[1] <= 1 + 10  # the decoder start token + 10 new
