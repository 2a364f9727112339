"""``tqdm`` that honours ``TQDM_DISABLE`` inside Jupyter too.

tqdm takes its defaults from ``TQDM_*`` variables, but ``tqdm.notebook`` (what ``tqdm.auto`` picks
in a kernel) passes ``disable=False`` on explicitly, which beats the variable. So ``make run``, which
sets ``TQDM_DISABLE=1``, still left each bar's first frame ("0%| | 0/169") in the executed
notebooks: all a static page keeps of a progress bar. This wrapper passes the variable on.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm as _tqdm


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm``, switched off when ``TQDM_DISABLE`` is set (to anything but "", "0" or "false")."""
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false"):
        kwargs["disable"] = True
    return _tqdm(*args, **kwargs)
