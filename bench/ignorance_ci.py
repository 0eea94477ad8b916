"""How sure is an ignorance gap? Hidden-sub-network loss and accuracy on a finished lora_study run's clean
training rows against its held-out rows (unseen instance keys), with a bootstrap interval of the gap.

    python bench/ignorance_ci.py bench/results/raw/ignorance-2000-0/run-study-lora--2-groups
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATASETS
from ignorance import prepare

from tod_clean.config import DataColumns
from tod_clean.encoding import encode_texts, sorted_batches
from tod_clean.instances import instances_from_table
from tod_clean.io.inputs import read_table
from tod_clean.masks import MaskMode, key_from_id
from tod_clean.run.rundir import RunDir

data = prepare(DEFAULT_DATASETS, 2000, 500, 0.1, 0)
run = RunDir(sys.argv[1])
info = run.read_info()
model = run.load_model(info)
tok = run.load_tokenizer()
out = {}
for name in ("train", "heldout"):
    inst = instances_from_table(read_table(str(data[f"{name}_path"])), DataColumns(id_col="id"), info.labels)
    enc = encode_texts(tok, inst.texts, None, 128)
    keys = (
        inst.instance_keys
        if name == "train"
        else np.array([key_from_id(f"heldout:{v}") for v in inst.ids], dtype=np.int64)
    )
    losses = np.zeros(len(enc))
    correct = np.zeros(len(enc))
    with torch.no_grad():
        for idx in sorted_batches(enc.lengths, 64):
            logits = model(enc.batch(idx), torch.as_tensor(keys[idx]), MaskMode.HIDDEN)
            y = torch.as_tensor(inst.labels[idx])
            losses[idx] = torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy()
            correct[idx] = (logits.argmax(1) == y).numpy()
    out[name] = (losses, correct)
clean = ~data["flipped"]
tl, tc = out["train"][0][clean], out["train"][1][clean]
hl, hc = out["heldout"]
print(
    f"hidden on clean train: mean loss {tl.mean():.3f} median {np.median(tl):.3f} acc {tc.mean():.3f} (n={len(tl)})"
)
print(
    f"hidden on held-out:    mean loss {hl.mean():.3f} median {np.median(hl):.3f} acc {hc.mean():.3f} (n={len(hl)})"
)
rng = np.random.default_rng(0)
diffs = [rng.choice(hl, len(hl)).mean() - rng.choice(tl, len(tl)).mean() for _ in range(2000)]
print(
    "gap (held-out - train) bootstrap 95%: {:.3f} .. {:.3f}".format(*tuple(np.percentile(diffs, [2.5, 97.5])))
)
