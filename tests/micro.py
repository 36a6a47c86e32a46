"""Micro models built in the tests: a 2-layer Llama with its own byte-level BPE tokenizer, and
random PEFT LoRA adapters for it. Everything is offline and takes a few seconds."""
from __future__ import annotations

import json
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "yes no maybe true false positive negative neutral entailment contradiction",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9",
    "Question: Is the sentence grammatical? Answer with yes or no.",
    "Sentence 1: A man is playing a guitar. Sentence 2: A person plays music.",
    "violence not violence gender profession race religion plausible answerable",
    "World Sports Business Sci/Tech Option 1 Option 2 choice1 choice2 Entail Contradict Neither",
]


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_micro_llama(out: Path, seed: int = 0, layers: int = 2) -> Path:
    """Save a random 2-layer Llama (hidden 64) with tokenizer and generation config to ``out``."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tok = build_tokenizer(out)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(out)
    return out


def build_random_lora(base_dir: Path, out: Path, seed: int, r: int = 4, alpha: int = 8,
                      targets: tuple[str, ...] = ("q_proj", "v_proj"), std: float = 0.05, **lora_kwargs) -> Path:
    """A PEFT LoRA adapter for ``base_dir`` with random, non-zero A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), **lora_kwargs))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    model.save_pretrained(out)
    return Path(out)


def adapter_config(path: Path) -> dict:
    return json.loads((Path(path) / "adapter_config.json").read_text())


def chat_prompt(tokenizer, text: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def train_micro_lora(base_dir: Path, out: Path, examples: list[tuple[str, str]], seed: int, steps: int = 60,
                     r: int = 4, lr: float = 3e-2) -> Path:
    """Train a q,v LoRA on (input, answer) pairs: loss on the answer and the end-of-turn token."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"]))
    rows = []
    for text, answer in examples:
        prompt = tok(chat_prompt(tok, text), add_special_tokens=False).input_ids
        target = tok(answer + tok.eos_token, add_special_tokens=False).input_ids
        rows.append((torch.tensor(prompt + target), torch.tensor([-100] * len(prompt) + target)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        ids, labels = rows[step % len(rows)]
        loss = model(input_ids=ids[None], labels=labels[None]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return Path(out)
