"""Training data: caption real images with a VLM and generate teacher datasets (thesis 4.3).

Both stages are resumable and shard their work over the processes of `accelerate launch`;
`shards.py` holds the engine, `caption.py` / `generate.py` the stages, `sources.py` the image
collections they read and `dataset.py` the reader of a generated dataset.
"""

from __future__ import annotations

from ditcompress.utils.lazy import lazy_getattr

# name -> module; imported on first use so that `import ditcompress.data` (e.g. for its
# config) does not load torch and the model libraries
_EXPORTS = {
    "CaptionConfig": "ditcompress.data.config",
    "GenerateConfig": "ditcompress.data.config",
    "read_captions": "ditcompress.data.caption",
    "regenerate": "ditcompress.data.generate",
    "run_caption": "ditcompress.data.caption",
    "run_generate": "ditcompress.data.generate",
}

__all__ = ["CaptionConfig", "GenerateConfig", "read_captions", "regenerate", "run_caption", "run_generate"]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
