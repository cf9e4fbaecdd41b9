"""Type stubs of lazyvm/core/state.pyx: the State class (the core's fields) and
host_zeros."""
from typing import Any, Dict

import numpy as np
import numpy.typing as npt

def host_zeros(nbytes: int) -> npt.NDArray[np.uint8]: ...

class State:
    physical: npt.NDArray[np.uint8]
    physical_ro: npt.NDArray[np.uint8]
    count_arr: npt.NDArray[np.int32]
    link_arr: npt.NDArray[np.uint32]
    index_arr: npt.NDArray[np.uint32]
    flags_arr: npt.NDArray[np.uint16]
    lidx_arr: npt.NDArray[np.uint16]
    nodes_arr: npt.NDArray[np.uint32]
    layout: int
    levels: int
    wide: bool
    contents: bool
    user_entries: int
    nrpte: int
    nframes: int
    nfree: int
    hwm: int
    boot_frames: int
    zero_pfn: int
    swapper_pgd: int
    rmap_enabled: bool
    nswap: int
    eager: bool
    thp: int
    thp_copy: bool
    nhfree: int
    def __init__(self, nframes: int, rmap: bool, nswap: int, layout: int = ...,
                 contents: bool = ..., eager: bool = ..., thp: int = ...,
                 thp_copy: bool = ...) -> None: ...
    def views(self) -> Dict[str, Any]: ...
