"""Pieces the experiments share: the digits data set with a fixed split, figures, progress bars.

Not an experiment (the leading underscore keeps it out of ``jaxcalc list``).
"""

from __future__ import annotations

import os
from typing import Iterable, NamedTuple, Tuple

import numpy as np

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0  # the fixed train/test split every digits study uses


class Digits(NamedTuple):
    """scikit-learn's 8×8 digits: images NHWC in [0, 1], integer labels, a fixed split."""

    x_train: np.ndarray  # (N_train, 8, 8, 1)
    y_train: np.ndarray  # (N_train,) int
    x_test: np.ndarray   # (N_test, 8, 8, 1)
    y_test: np.ndarray   # (N_test,) int

    def flat(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(x_train, x_test)`` flattened to ``(N, 64)``."""
        return self.x_train.reshape(len(self.x_train), -1), self.x_test.reshape(len(self.x_test), -1)


def load_digits(dtype=np.float32, test_fraction: float = DIGITS_TEST_FRACTION,
                seed: int = DIGITS_SPLIT_SEED) -> Digits:
    """The 1797 digits of ``sklearn.datasets.load_digits`` (shipped with scikit-learn: no
    download), pixel values scaled from 0..16 to [0, 1], split stratified by class with a fixed
    seed so every study and every run sees the same test set."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    data = _load()
    images = (data.images / 16.0).astype(dtype)[..., None]
    x_tr, x_te, y_tr, y_te = train_test_split(images, data.target.astype(np.int32),
                                              test_size=test_fraction, random_state=seed,
                                              stratify=data.target)
    return Digits(x_tr, y_tr, x_te, y_te)


def save_figure(fig, out_dir: str, name: str) -> str:
    """Save ``fig`` as ``out_dir/name`` (PNG, 120 dpi, tight) and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend (works with no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def progress(iterable: Iterable, total: int | None = None, desc: str = "", enabled: bool = True):
    """A tqdm progress bar over ``iterable`` (shown on stderr; disabled when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not enabled)


def format_table(header: Iterable[str], rows: Iterable[Iterable], floatfmt: str = ".4g") -> str:
    """A plain-text table: columns padded to their widest cell, floats formatted with ``floatfmt``."""
    def cell(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    header = [str(h) for h in header]
    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)
