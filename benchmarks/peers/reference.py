"""sentence-transformers' vectors of the queries: the reference every contender's vectors are
checked against. Run with the project's interpreter, in its own process so that PyTorch's
threads and memory stay out of the driver that times the contenders:

    reference.py CHECKPOINT_DIR QUERIES_FILE OUT.npy
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    checkpoint, queries_file, out = (Path(a) for a in sys.argv[1:4])
    texts = [line for line in queries_file.read_text(encoding="utf-8").splitlines() if line]
    started = time.perf_counter()
    model = SentenceTransformer(str(checkpoint), device="cpu")
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
    np.save(out, np.asarray(vectors, dtype=np.float32))
    modules = [type(m).__name__ for m in model]
    seconds = round(time.perf_counter() - started, 1)
    print(json.dumps({"texts": len(texts), "modules": modules, "seconds": seconds}))


if __name__ == "__main__":
    main()
