"""Type stubs of the invariant checker (lazyvm/core/check.pyx)."""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

def check(v: Dict[str, Any], pgds: List[int], shm_ranges: List[Tuple[int, int]],
          vmas: Optional[List[np.ndarray]] = None) -> None: ...
