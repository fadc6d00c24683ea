"""Healing by distillation: a short training run that pulls the compressed vision tower back toward the
uncompressed (teacher) model on *unlabelled* calibration images.

No labels are used, so any augmentation is consistent: the teacher labels each augmented image itself.
That is what lets a few hundred steps on ~1,000 images help instead of overfitting.  Loss: cosine
distance of the image embeddings, plus KL divergence of the zero-shot logits (temperature 2) when the
model classifies.  Only the vision tower trains; the text tower (run once at build time) is left as is.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from edgeclip.errors import EdgeclipError

from .calibration import Calibration
from .config import HealConfig
from .report import PassReport, n_params
from .structure import family

TEMPERATURE = 2.0
SEED = 0


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip, shift by up to 1/8 of the side (reflect-padded), and mix pairs of images."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
    x = padded[:, :, dy:dy + h, dx:dx + w]
    lam = torch.distributions.Beta(0.4, 0.4).sample((b,)).clamp(0.0, 1.0)  # seeded through torch.manual_seed
    perm = torch.randperm(b, generator=g)
    return lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[perm]


def _vision(model: nn.Module) -> nn.Module:
    return family(model).vision(model)


def apply(model: nn.Module, cfg: HealConfig, calib: Calibration | None = None,
          teacher: nn.Module | None = None, progress=None) -> tuple[nn.Module, PassReport]:
    if calib is None or teacher is None:
        raise EdgeclipError("--heal-steps distils toward the uncompressed model on calibration images; pass --calib-data")
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    student = copy.deepcopy(model)
    fam = family(student)
    before = n_params(student)
    score = calib.scorer(teacher, "vision")
    agree_before = score(student)
    t_head = s_head = None
    logits_out = fam.outputs_logits(student)
    if fam.has_text and calib.head is not None:
        with torch.no_grad():
            t_head, s_head = calib.head(teacher), calib.head(student)
    vis_t, vis_s = _vision(teacher).eval(), _vision(student)
    for p in student.parameters():
        p.requires_grad_(False)
    params = [p for p in vis_s.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    images = calib.train_images if calib.train_images is not None else calib.images
    losses = []
    t0 = time.perf_counter()
    vis_s.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, len(images), (min(cfg.batch, len(images)),), generator=g)
        x = _augment(images[idx], g)
        with torch.no_grad():
            ft = vis_t(x)
        fs = vis_s(x)
        if logits_out:    # the head's logits are the output: match them
            loss = F.kl_div(F.log_softmax(fs / TEMPERATURE, -1), F.softmax(ft / TEMPERATURE, -1), reduction="batchmean")
        else:
            ft, fs = F.normalize(ft, dim=-1), F.normalize(fs, dim=-1)
            loss = (1 - (ft * fs).sum(-1)).mean()
            if t_head is not None:
                lt, ls = ft @ t_head.T / TEMPERATURE, fs @ s_head.T / TEMPERATURE
                loss = loss + F.kl_div(F.log_softmax(ls, -1), F.softmax(lt, -1), reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress(1)
    vis_s.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    seconds = time.perf_counter() - t0
    report = PassReport("heal", before, n_params(student), extra={
        "steps": cfg.steps, "batch": cfg.batch, "lr": cfg.lr, "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(), "images": f"{len(images)} unlabelled calibration images, augmented",
        "loss_first_10": round(sum(losses[:10]) / len(losses[:10]), 5), "loss_last_10": round(sum(losses[-10:]) / len(losses[-10:]), 5),
        "calib_agreement_before": round(agree_before, 4), "calib_agreement_after": round(score(student), 4),
        "calib_agreement_note": "on images the heal trained on (optimistic); the export's vs_uncompressed is on held-out images",
        "loss": "1 - cosine(image embeddings)" + (" + KL(zero-shot logits, T=2)" if t_head is not None else "")})
    return student, report
