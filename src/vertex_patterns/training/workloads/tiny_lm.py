"""`tiny-lm`: a small byte-level causal transformer trained on Python's own standard library.

The corpus is the interpreter's top-level standard-library `.py` files, in sorted order, up to
a byte cap: it ships with every Python, so nothing is downloaded. Every tenth file (by sorted
position) is held out for evaluation. The corpus's sha256 goes into the config, so a run dir
trained on one Python's sources refuses to resume on another's.

Sample id `i` is the window of `context + 1` bytes at `offsets[i]`, where `offsets` is a table
drawn once from a fixed seed: `get_batch` is a pure function of the ids, and the windows land at
arbitrary byte offsets rather than on a fixed grid. Evaluation averages the loss over a fixed,
evenly spaced set of held-out windows.

Attention is written out (matmul, causal mask, softmax) rather than calling
`scaled_dot_product_attention`, whose fused CUDA backward kernels refuse
`torch.use_deterministic_algorithms`. The output head is not tied to the embedding, because
safetensors refuses to save tensors that share memory.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import sysconfig
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vertex_patterns.errors import ConfigError
from vertex_patterns.training.workload import Workload
from vertex_patterns.training.workloads.lr_schedule import warmup_cosine

NAME = "tiny-lm"
VOCAB_SIZE = 256
HELD_OUT_EVERY = 10
"""Every tenth file of the sorted list (positions 9, 19, ...) is held out."""
WINDOW_SEED = 1_234_567
"""Seeds the sample-id -> byte-offset table; fixed so every training seed sees the same data."""
EVAL_WINDOWS = 64
EVAL_CHUNK = 16
GRAD_CLIP = 1.0
MIN_CORPUS_BYTES = 64 * 1024


@functools.lru_cache(maxsize=2)
def load_corpus(stdlib_dir: str, max_bytes: int) -> tuple[bytes, bytes, int]:
    """Reads the standard library's top-level `.py` files, in sorted order, up to `max_bytes`.

    Args:
        stdlib_dir: The standard library directory.
        max_bytes: Stop adding files once this many bytes are read.

    Returns:
        (training text, held-out text, number of files read). Files are separated by a blank
        line.

    Raises:
        ConfigError: The directory holds too little Python source to train on.
    """
    try:
        names = sorted(n for n in os.listdir(stdlib_dir) if n.endswith(".py"))
    except OSError as exc:
        raise ConfigError(f"tiny-lm cannot list the standard library at {stdlib_dir!r} "
                          f"({exc}): run it on a Python installed with its sources") from exc
    train: list[bytes] = []
    held_out: list[bytes] = []
    total = 0
    used = 0
    for index, name in enumerate(names):
        if total >= max_bytes:
            break
        with open(os.path.join(stdlib_dir, name), "rb") as f:
            text = f.read() + b"\n\n"
        (held_out if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else train).append(text)
        total += len(text)
        used += 1
    train_text, held_text = b"".join(train), b"".join(held_out)
    if len(train_text) < MIN_CORPUS_BYTES or len(held_text) < MIN_CORPUS_BYTES // 8:
        raise ConfigError(f"tiny-lm found only {total} bytes of Python source under "
                          f"{stdlib_dir!r}: run it on a Python installed with its .py sources")
    return train_text, held_text, used


class Block(nn.Module):
    """A pre-norm transformer block: causal self-attention then a 4x GELU MLP."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Applies the block to `x` [batch, time, d_model]; `mask` is True above the diagonal."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.n_heads)
        attn = scores.masked_fill(mask[:t, :t], float("-inf")).softmax(dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyLM(nn.Module):
    """Byte embeddings + learned positions, `n_layers` blocks, a final norm and a byte head."""

    def __init__(self, *, context: int, d_model: int, n_layers: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"tiny-lm d_model {d_model} must be a multiple of n_heads "
                              f"{n_heads}")
        self.tok_emb = nn.Embedding(VOCAB_SIZE, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB_SIZE, bias=False)
        self.register_buffer(
            "mask", torch.ones(context, context, dtype=torch.bool).triu(1), persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-byte logits [batch, time, 256] for int64 `tokens` [batch, time]."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.ln_f(x))


def _lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x).reshape(-1, VOCAB_SIZE), y.reshape(-1))


def build(*, seed: int, device: torch.device, batch_size: int = 32, context: int = 128,
          d_model: int = 128, n_layers: int = 2, n_heads: int = 4, lr: float = 2e-3,
          weight_decay: float = 0.01, warmup_steps: int = 50, decay_steps: int = 2000,
          min_lr_ratio: float = 0.1, max_corpus_bytes: int = 4 * 1024 * 1024,
          stdlib_dir: str | None = None) -> Workload:
    """Builds the tiny-lm workload.

    Args:
        seed: Seeds the model's initial parameters (the corpus and windows do not depend on it).
        device: Where the model and the corpus live.
        batch_size: Windows per step on each rank.
        context: Bytes of context per window.
        d_model: Embedding width.
        n_layers: Transformer blocks.
        n_heads: Attention heads per block.
        lr: AdamW's peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        warmup_steps: Steps of linear LR warmup.
        decay_steps: Step at which the cosine decay reaches its floor.
        min_lr_ratio: The LR floor as a fraction of `lr`.
        max_corpus_bytes: Cap on the source bytes read.
        stdlib_dir: The directory to read; defaults to this interpreter's standard library.

    Returns:
        The workload; its config records the corpus digest and every argument but `seed`,
        `device` and `stdlib_dir`.

    Raises:
        ConfigError: Too little source to train on, or inconsistent model dimensions.
    """
    directory = stdlib_dir or sysconfig.get_paths()["stdlib"]
    train_text, held_text, num_files = load_corpus(directory, max_corpus_bytes)
    digest = hashlib.sha256(train_text + b"\0" + held_text).hexdigest()[:16]
    train_data = torch.frombuffer(bytearray(train_text), dtype=torch.uint8).to(device)
    held_data = torch.frombuffer(bytearray(held_text), dtype=torch.uint8).to(device)

    dataset_size = len(train_text) // context
    window = torch.arange(context + 1, device=device)
    offsets = torch.randint(0, len(train_text) - context, (dataset_size,),
                            generator=torch.Generator().manual_seed(WINDOW_SEED)).to(device)
    eval_offsets = torch.linspace(0, len(held_text) - context - 1, EVAL_WINDOWS,
                                  dtype=torch.float64).long().to(device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyLM(context=context, d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                  betas=(0.9, 0.95))
    scheduler = warmup_cosine(optimizer, warmup_steps=warmup_steps, decay_steps=decay_steps,
                              min_lr_ratio=min_lr_ratio)

    def windows(data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = data[starts[:, None] + window].long()
        return tokens[:, :-1], tokens[:, 1:]

    def get_batch(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids.to(device=device, dtype=torch.int64)
        return windows(train_data, offsets.index_select(0, ids))

    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total = 0.0
        try:
            with torch.no_grad():
                for chunk in eval_offsets.split(EVAL_CHUNK):
                    total += _lm_loss(model, windows(held_data, chunk)).item() * len(chunk)
        finally:
            model.train(was_training)
        loss = total / len(eval_offsets)
        return {"loss": loss, "perplexity": math.exp(loss)}

    config: dict[str, Any] = {
        "corpus": "python-stdlib-top-level-py", "corpus_sha256": digest,
        "corpus_files": num_files, "train_bytes": len(train_text),
        "held_out_bytes": len(held_text), "held_out_every": HELD_OUT_EVERY,
        "window_seed": WINDOW_SEED, "eval_windows": EVAL_WINDOWS,
        "max_corpus_bytes": max_corpus_bytes, "model": "causal-transformer",
        "vocab_size": VOCAB_SIZE, "context": context, "d_model": d_model,
        "n_layers": n_layers, "n_heads": n_heads, "optimizer": "adamw", "lr": lr,
        "betas": [0.9, 0.95], "weight_decay": weight_decay, "batch_size": batch_size,
        "schedule": "warmup_cosine", "warmup_steps": warmup_steps, "decay_steps": decay_steps,
        "min_lr_ratio": min_lr_ratio, "grad_clip": GRAD_CLIP,
    }
    return Workload(name=NAME, model=model, optimizer=optimizer, scheduler=scheduler,
                    dataset_size=dataset_size, batch_size=batch_size, get_batch=get_batch,
                    loss_fn=_lm_loss, evaluate=evaluate, config=config, grad_clip=GRAD_CLIP)
