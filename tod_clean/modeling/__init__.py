"""The model tod-clean trains and scores.

- ``classifier.py``     ``TodClassifier``: encoder + pooling + head, the masking state, the forward passes;
                        every scope-specific step is its ``Scope`` object's (tod_clean/scopes/)
- ``loading.py``        an encoder and tokenizer from a model folder or hub name (refused with one error
                        when unusable), the limits they set on --max-length, the classifier built on them
- ``split_forward.py``  the split forward pass for scoring: the layers below the masks once, the rest per mask
"""
