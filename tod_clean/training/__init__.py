"""Fine-tuning with turn-over dropout.

- ``loop.py``        the training loop: a new run trained, an interrupted one resumed, the epochs of batches
                     (exposed-sub-network forward and backward, gradient accumulation, per-epoch metrics)
- ``optim.py``       what trains and how fast: parameter groups (head, LoRA, encoder), learning rates, weight
                     decay, the warm-up/decay schedule, freezing
- ``checkpoint.py``  the resumable state of an epoch (weights, optimizer, scheduler, RNG) for ``--resume``,
                     as safetensors and JSON, never pickle
"""
