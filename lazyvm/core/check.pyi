"""Type stubs of the invariant checker (lazyvm/core/check.pyx)."""
from typing import Any, Dict, List, Tuple

def check(v: Dict[str, Any], pgds: List[int], shm_ranges: List[Tuple[int, int]]) -> None: ...
