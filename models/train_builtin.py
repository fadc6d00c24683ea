"""Train edgeclip's built-in default model: a small CLIP on Fashion-MNIST, from scratch, on a CPU.

Why it exists: ``edgeclip export`` / ``edgeclip bench`` must run end to end offline on a model
whose accuracy means something, and whose weights are the project's own.  The text tower is kept
narrow because the 49,408-row BPE token table dominates the file (49,408 x 64 x 2 bytes = 6.3 MB
in fp16); the standard vocabulary stays so the stock open_clip tokenizer works unchanged.

Reproduce (about 12-15 minutes on 2 idle cores; the 60k train images come from Debian's
``dataset-fashion-mnist`` package)::

    OMP_WAIT_POLICY=PASSIVE python -m edgeclip.models.train_builtin --seed 0 --threads 2 --out /tmp/builtin

``--out`` is required so a run never overwrites the shipped weights by accident; copy the three
files into ``models/weights/edgeclip_fmnist/`` to ship a new model.

Recipe: the image batch is contrasted against one caption per class (a random template each
step); image->text is cross-entropy over the 10 captions, text->image treats every image of the
caption's class as a positive (duplicates in a batch are not negatives).  AdamW, linear warm-up,
cosine decay, FLIP-style patch dropout for most of the run (half the patches, ~2x cheaper), the
last tenth of the steps on all patches so the model is tuned to what it sees at inference.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import load_dataset, load_fashion_mnist
from .preprocess import Preprocess

MODEL_CFG = {
    "embed_dim": 96,
    "vision_cfg": {"image_size": 32, "patch_size": 4, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TEMPLATES = [
    "a photo of a {c}.",
    "a black and white photo of a {c}.",
    "a low resolution photo of a {c}.",
    "a picture of the {c}.",
    "a grayscale image of a {c}.",
    "a small photo of a {c}.",
    "a product photo of a {c}.",
    "a centered photo of the {c}.",
]


def _zero_shot_weights(model, tokenizer, names: list[str], templates: list[str]) -> torch.Tensor:
    with torch.no_grad():
        cols = []
        for name in names:
            emb = model.encode_text(tokenizer([t.format(c=name) for t in templates]), normalize=True)
            cols.append(F.normalize(emb.mean(0), dim=-1))
        return torch.stack(cols, 1)


def _accuracy(model, tokenizer, x: torch.Tensor, y: torch.Tensor, names, templates, bs: int = 500) -> float:
    model.eval()
    w = _zero_shot_weights(model, tokenizer, names, templates)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            pred = (model.encode_image(x[i:i + bs], normalize=True) @ w).argmax(-1)
            correct += int((pred == y[i:i + bs]).sum())
    model.train()
    return 100.0 * correct / len(x)


def train(args) -> dict:
    import open_clip
    from open_clip.transformer import PatchDropout

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    pre = Preprocess(size=32, interpolation="bicubic")

    train_set = load_fashion_mnist(args.data, "train")
    if len(train_set) < 60000:
        raise SystemExit(f"need the full 60k train split (found {len(train_set)} at {train_set.source}); apt-get install dataset-fashion-mnist")
    test_set = load_dataset("fashion-mnist" + (f":{args.data}" if args.data else ""), "test")
    t0 = time.time()
    x_train, y_train = train_set.tensors(pre), torch.from_numpy(train_set.labels)
    x_test, y_test = test_set.tensors(pre), torch.from_numpy(test_set.labels)
    print(f"preprocessed {len(x_train)} train / {len(x_test)} test images in {time.time() - t0:.1f}s", flush=True)

    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    names = train_set.prompt_names
    captions = torch.stack([tokenizer([t.format(c=n) for n in names]) for t in TEMPLATES])  # [T, C, L]

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    steps_per_epoch = len(x_train) // args.batch
    total = int(args.epochs * steps_per_epoch)
    full_patch_from = int(total * (1 - args.full_patch_frac))

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - args.warmup) / max(1, total - args.warmup)))

    log = {"model_cfg": MODEL_CFG, "args": vars(args), "epochs": [], "steps": total}
    model.train()
    model.visual.patch_dropout = PatchDropout(args.patch_dropout) if args.patch_dropout > 0 else torch.nn.Identity()
    t_start, step, perm = time.time(), 0, torch.empty(0, dtype=torch.long)
    running = []
    while step < total:
        if step % steps_per_epoch == 0:
            perm = torch.randperm(len(x_train), generator=gen)
        if step == full_patch_from:
            model.visual.patch_dropout = torch.nn.Identity()
        k = step % steps_per_epoch
        idx = perm[k * args.batch:(k + 1) * args.batch]
        xb, yb = x_train[idx], y_train[idx]
        tpl = torch.randint(len(TEMPLATES), (len(names),), generator=gen)
        tokens = captions[tpl, torch.arange(len(names))]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        img = model.encode_image(xb, normalize=True)
        txt = model.encode_text(tokens, normalize=True)
        scale = model.logit_scale.exp()
        logits = scale * img @ txt.t()                                  # [B, C]
        loss_i2t = F.cross_entropy(logits, yb)
        present = torch.unique(yb)
        t2i = logits.t()[present].log_softmax(-1)                        # [C', B]
        positives = (yb[None, :] == present[:, None]).float()
        loss_t2i = -((t2i * positives).sum(-1) / positives.sum(-1)).mean()
        loss = 0.5 * (loss_i2t + loss_t2i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        running.append(loss.item())
        step += 1
        if step % 100 == 0:
            el = time.time() - t_start
            print(f"step {step}/{total} loss {np.mean(running[-100:]):.3f} lr {lr_at(step):.2e} "
                  f"{el:.0f}s (eta {el / step * (total - step):.0f}s)", flush=True)
        if step % steps_per_epoch == 0 or step == total:
            acc = _accuracy(model, tokenizer, x_test[:2000], y_test[:2000], names, TEMPLATES)
            log["epochs"].append({"step": step, "loss": float(np.mean(running[-steps_per_epoch:])), "top1_first2000": acc,
                                  "seconds": round(time.time() - t_start, 1)})
            print(f"  step {step}: zero-shot top-1 on first 2000 test images {acc:.2f}%", flush=True)
    model.visual.patch_dropout = torch.nn.Identity()
    model.eval()
    log["train_seconds"] = round(time.time() - t_start, 1)
    log["top1_test10k"] = round(_accuracy(model, tokenizer, x_test, y_test, names, TEMPLATES), 2)
    log["logit_scale"] = float(model.logit_scale.exp())
    print(f"final zero-shot top-1 on the 10k test set: {log['top1_test10k']:.2f}%  ({log['train_seconds']:.0f}s)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    (out / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": MODEL_CFG,
        "preprocess_cfg": {"size": 32, "mode": "RGB", "mean": list(pre.mean), "std": list(pre.std),
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }, indent=2))
    (out / "templates.json").write_text(json.dumps({"classes": train_set.classes, "prompt_names": names,
                                                    "templates": TEMPLATES}, indent=2))
    (out / "train_log.json").write_text(json.dumps(log, indent=2))
    return log


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for the weights, config, templates and log")
    p.add_argument("--data", default=None, help="Fashion-MNIST folder with the train-*-ubyte.gz files (default: Debian's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--patch-dropout", type=float, default=0.5)
    p.add_argument("--full-patch-frac", type=float, default=0.1)
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
