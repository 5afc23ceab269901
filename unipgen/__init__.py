"""unipgen: unified personalized generation.

Importing this package is cheap: torch, transformers, diffusers and ray are imported only by
the modules that use them, when they are used.
"""

from unipgen.errors import UnipgenError

__version__ = "0.1.0"
__all__ = ["UnipgenError", "__version__"]
