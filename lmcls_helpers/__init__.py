"""lmcls helpers: the plumbing behind the notebooks, so the notebooks can keep the lesson.

One module per concern: ``profiles`` (sizes and paths), ``data`` (CoLA and ledger lines),
``world`` (the offline tiny world), ``small`` (the offline SmolLM2 model), ``hub`` (access to the
gated Llama 3), ``tokens``, ``prompts``, ``scoring``, ``models``, ``quant``, ``memory``, ``heads``,
``checkpoints``, ``classify`` (a saved classifier on new text), ``budget`` (time plans),
``plots`` and ``results``.
"""

import logging
import os
import platform
import warnings

__version__ = "0.1.0"

# One x86 code path for every CPU, so the tiny world prints the same numbers everywhere. MKL, oneDNN and
# torch's own kernels pick AVX-512 code where the CPU has it, and those kernels sum in another order:
# the world's pre-training then ends in a different tiny model (measured: a Zen 4 EPYC printed 116 of
# 142 where AVX2-only machines printed 115). Pinned to AVX2, which every x86-64 CPU of the last ten
# years has, a Zen 4 prints what an AVX2-only CPU prints. Read before the first computation, not at
# `import torch`; set one of them yourself (e.g. MKL_CBWR=AUTO) to keep the native path.
#: The variables and values of that pin; empty off x86-64 (Apple silicon, ARM servers), where they do not apply.
CPU_CODE_PATH: dict[str, str] = (
    {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    if platform.machine().lower() in ("x86_64", "amd64") else {}
)
for _name, _value in CPU_CODE_PATH.items():
    os.environ.setdefault(_name, _value)

# bitsandbytes 0.50 on CPUs with AVX512-BF16 tries to fetch a faster 4-bit kernel from the Hugging
# Face hub at import and warns "pip install kernels" when it cannot. Offline that is noise, not
# advice: its built-in CPU kernel is used, and is the one the notebooks are checked with.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft 0.21 calls transformers' renamed `is_gradient_checkpointing` inside PeftModel.from_pretrained and
# prepare_model_for_kbit_training: a FutureWarning about peft's code, not the reader's (gone in later peft).
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)

#: The one place the GitHub repository is named: Colab badges and install lines derive from it.
REPO = "lmcls-org/lmcls"
BRANCH = "main"


def colab_url(notebook: str) -> str:
    """Colab link for ``notebooks/<notebook>.ipynb`` in :data:`REPO`."""
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{notebook}.ipynb"


def colab_badge(notebook: str) -> str:
    """Markdown for the "Open in Colab" badge of one notebook."""
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


#: What a Colab runtime lacks, at this project's pins (tests check them against pyproject.toml).
#: Everything else (torch, pandas, scikit-learn, matplotlib, ...) Colab already has: reinstalling
#: an imported package would break the running kernel, so the package itself goes in ``--no-deps``.
COLAB_PACKAGES = (
    "transformers==5.23.0", "peft==0.21.2", "bitsandbytes==0.50.2", "accelerate==1.15.0", "gguf==0.19.0",
)
