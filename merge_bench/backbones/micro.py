"""Micro models built locally, for the tests and the demo: a 2-layer Llama with its own byte-level BPE
tokenizer, random or trained PEFT LoRA adapters for it, and a micro backbone (3 tasks with lm-eval YAMLs).
Everything is offline and takes seconds.

The micro suite: A micro backbone for pipeline tests: the micro Llama, 3 micro tasks with lm-eval YAMLs, and
trained micro adapters. Each task has a constant answer, so a LoRA learns it in a few steps and the
base scores 0: a merged model's per-task scores then show how much of each adapter survived. Two of the
three tasks share their answer, so their adapters push the same way and a working merge (simple_avg,
task_arithmetic) keeps it on those two tasks, while a merge that loses the task vectors scores 0 like the
base: the smoke test can tell the two apart. (Three different answers left every merge of these
unconditional adapters at 0.)"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from .spec import AdapterRef, Backbone, EvalDefaults

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
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
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
    randomize_lora_(model, seed, std)
    model.save_pretrained(out)
    return Path(out)


def randomize_lora_(model, seed: int, std: float) -> None:
    """Fill every LoRA factor of a PEFT model with seeded N(0, std²) values (PEFT starts B at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


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


MICRO_TASKS = {"color": "blue", "animal": "cat", "answer": "cat"}
BUILT = "built by merge_bench.backbones.micro, suite 2 (animal and answer share their answer)\n"
WORDS = "the quick brown fox jumps over lazy dog sentence question music guitar man person".split()

TASK_YAML = """task: micro_{short}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
process_docs: !function utils.process_docs
output_type: generate_until
doc_to_text: "{{{{input}}}}"
doc_to_target: "{{{{output}}}}"
generation_kwargs:
  until: ["<|im_end|>", "\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"""

UTILS = '''def process_docs(dataset):
    return dataset.map(lambda doc: {"mb_id": str(doc["id"])})
'''


def _inputs(short: str, n: int, seed: int) -> list[str]:
    rng = random.Random(f"{short}-{seed}")
    return [f"{short}: " + " ".join(rng.choice(WORDS) for _ in range(4)) for _ in range(n)]


def build_micro_suite(root: Path, base_dir: Path, n_test: int = 6) -> Backbone:
    root = Path(root)
    tasks_dir = root / "tasks"
    tasks_dir.mkdir(parents=True)
    (tasks_dir / "utils.py").write_text(UTILS)
    adapters = {}
    for i, (short, answer) in enumerate(MICRO_TASKS.items()):
        data = root / "data" / f"{short}.jsonl"
        data.parent.mkdir(exist_ok=True)
        rows = [{"id": j, "input": text, "output": answer} for j, text in enumerate(_inputs(short, n_test, 1))]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tasks_dir / f"micro_{short}.yaml").write_text(TASK_YAML.format(short=short, data=data))
        # its validation variant (the tuned track): other inputs, the same answer
        val = root / "data" / f"{short}_val.jsonl"
        val.write_text("".join(json.dumps({"id": j, "input": text, "output": answer}) + "\n"
                               for j, text in enumerate(_inputs(short, 4, 2))))
        (tasks_dir / f"micro_{short}_val.yaml").write_text(TASK_YAML.format(short=f"{short}_val", data=val))
        train = [(text, answer) for text in _inputs(short, 8, 0)]
        adapters[short] = AdapterRef(str(train_micro_lora(base_dir, root / "adapters" / short, train, seed=i)))
    return Backbone("micro", "micro", "local/micro-llama", adapters, local_base=lambda: Path(base_dir),
                    task_dirs=(tasks_dir,), eval=EvalDefaults(batch_size=8, max_length=256, dtype="float32"))


def micro_backbone(root: Path) -> Backbone:
    """The micro backbone built once under ``root`` (reused while its completion marker is there)."""
    import shutil
    import warnings

    from ..io.console import no_library_bars

    root = Path(root)
    done = root / "COMPLETE"
    if not done.is_file() or done.read_text() != BUILT:
        shutil.rmtree(root, ignore_errors=True)  # interrupted, or built by an older suite: start again
        # quietly: a run's console holds merge-bench's lines only (no loading bars, no library deprecations)
        with no_library_bars(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_micro_llama(root / "base")
            build_micro_suite(root / "suite", root / "base")
        done.write_text(BUILT)
    adapters = {s: AdapterRef(str(root / "suite" / "adapters" / s)) for s in MICRO_TASKS}
    return Backbone("micro", "micro", "local/micro-llama", adapters, local_base=lambda: root / "base",
                    task_dirs=(root / "suite" / "tasks",),
                    eval=EvalDefaults(batch_size=8, max_length=256, dtype="float32"))

