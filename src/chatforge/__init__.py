"""chatforge: from raw text to an aligned chat model."""

import os

# transformers >= 5.2x kernelizes every model loaded with from_pretrained when the `kernels` package
# is installed (it is a dependency of transformers), and on CUDA that fetches kernel code from the
# Hub at the first model.train(): a download, and remote code, that chatforge never asks for and
# that fails offline. Off unless the user turns it on explicitly (USE_HUB_KERNELS=YES).
os.environ.setdefault("USE_HUB_KERNELS", "NO")

__version__ = "0.1.0"
