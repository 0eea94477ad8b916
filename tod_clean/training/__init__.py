"""Fine-tuning with turn-over dropout.

- ``loop.py``  the training loop: a new run trained, an interrupted one resumed, the epochs of batches
               (exposed-sub-network forward and backward, gradient accumulation, per-epoch metrics)
"""
