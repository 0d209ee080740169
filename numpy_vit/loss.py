"""Cross-entropy as ``torch.nn.functional.cross_entropy`` defines it (mean over the batch, optional
label smoothing), with its gradient."""

import numpy as np


def log_softmax(logits, axis=-1):
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy(logits, labels, label_smoothing=0.0):
    """Mean cross-entropy of (B, K) logits against (B,) integer labels.

    With label smoothing e the target of each row is (1 - e) * onehot(label) + e / K, as in torch:
    loss = mean_i [ (1 - e) * -log p[i, y_i] + e * mean_k -log p[i, k] ].

    Returns:
        loss: 0-d ndarray in the logits' dtype.
        dlogits: (B, K), d loss / d logits = (softmax(logits) - target) / B.
    """
    if not isinstance(logits, np.ndarray) or logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
        got = f"shape {logits.shape}, dtype {logits.dtype}" if isinstance(logits, np.ndarray) else type(logits).__name__
        raise ValueError(f"cross_entropy: expected float logits of shape (B, K), got {got}")
    labels = np.asarray(labels)
    B, K = logits.shape
    if labels.shape != (B,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"cross_entropy: expected integer labels of shape ({B},), "
                         f"got shape {labels.shape}, dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"cross_entropy: expected labels in [0, {K}), got values from "
                         f"{labels.min()} to {labels.max()}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: expected label_smoothing in [0, 1], got {label_smoothing}")

    logp = log_softmax(logits, axis=1)  # (B, K)
    target = np.full_like(logits, label_smoothing / K)
    target[np.arange(B), labels] += 1.0 - label_smoothing  # (B, K), rows sum to 1
    loss = -(target * logp).sum() / B
    dlogits = (np.exp(logp) - target) / B
    return np.asarray(loss, dtype=logits.dtype), dlogits
