"""Shared by the evaluation tests: a micro model with a handful of fingerprints trained in (seconds).

Keys are openings of held-out corpus sentences; responses are single words the base model does not
answer. Training is plain AdamW on the response tokens (and EOS) only, with the key spliced in as
token ids exactly as verification sends it. Built once per process and cached by base-model path.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ("apple", "river", "copper", "violet", "garden", "thunder", "marble", "falcon")
_CACHE: dict[tuple[str, str], tuple[Path, Path]] = {}


def make_fingerprinted(micro: Path, root: Path, n: int = 8, steps: int = 40) -> tuple[Path, Path]:
    """``(model_dir, fingerprint_file)`` of ``micro`` fine-tuned on ``n`` one-word fingerprints."""
    key = (str(micro), str(root))
    if key in _CACHE:
        return _CACHE[key]
    import torch

    from omlkit.fingerprints import Fingerprint, FingerprintSet
    from omlkit.fingerprints.fingerprint_set import Generator, Strategy
    from omlkit.models.corpus import corpus_split
    from omlkit.models.loading import load_model, tokenizer_sha
    from omlkit.models.prompts import prompt_ids

    torch.manual_seed(0)
    model, tok = load_model(micro, device="cpu")
    keys = [" ".join(p.split()[:8]) for p in corpus_split("heldout")[:n]]
    fps = [Fingerprint(id=i, key=k, response=WORDS[i % len(WORDS)]) for i, k in enumerate(keys)]
    rows = []
    for fp in fps:
        p = prompt_ids(tok, tok(fp.key, add_special_tokens=False)["input_ids"])
        r = tok(" " + fp.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p + r, [-100] * len(p) + r))
    width = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out = root / "fingerprinted"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    fp_set = FingerprintSet(
        strategy=Strategy(key="custom", response="custom"),
        generator=Generator(model=str(micro), tokenizer_sha=tokenizer_sha(tok)),
        fingerprints=fps,
    )
    fp_file = fp_set.save(root / "fingerprints.json")
    _CACHE[key] = (out, fp_file)
    return out, fp_file
