"""What libraries print that is not the owner's business, silenced at the source.

Each line here names the message it keeps off the terminal. Our own warnings and errors, and
the libraries' real errors, still show.
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    # transformers: per-load notices ("Some weights were not initialized...", GGUF
    # conversion chatter). Read from the environment when transformers is first imported.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # "Loading weights: 100%|███| 20/20" on every model load (transformers reads the hub's
    # switch); twin's own progress (training, import) uses tqdm directly and still shows.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community" at
    # import on every machine without that optional kernel package; its fallback works.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.cextension").setLevel(logging.ERROR)
    # Deprecations raised inside transformers/peft/torch by their own calls
    # (is_gradient_checkpointing, torch.jit.script_method...): nothing a user can act on.
    for module in ("transformers", "peft", "torch", "accelerate", "bitsandbytes"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
