"""The model tod-clean trains and scores.

- ``classifier.py``     ``TodClassifier``: encoder + pooling + head, the masking state, the forward passes;
                        every scope-specific step is its ``Scope`` object's (tod_clean/scopes/)
- ``split_forward.py``  the split forward pass for scoring: the layers below the masks once, the rest per mask
"""
