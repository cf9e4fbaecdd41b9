"""The paging layouts (DESIGN.md section 6) and entry bits, for the Python layer.

    i386     31      22 21      12 11     0             2 levels, 32-bit entries
            | pgd (10) | pte (10) | offset |

    pae      31 30 29     21 20     12 11     0         3 levels, 64-bit entries
            |pgd | pmd (9)  | pte (9) | offset |        (pgd = the 4-entry PDPT)

    x86_64   47     39 38     30 29     21 20     12 11     0      4 levels, 64-bit
            | pgd (9) | pud (9) | pmd (9) | pte (9) | offset |

The compiled core has the same numbers in lazyvm/core/defs.pxd and lazyvm/core/state.pyx (State.__cinit__).
"""
from typing import NamedTuple, Tuple

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# Entry bits, every level of every layout.
P, RW, US, PWT, PCD, A, D, PS, G = 0x001, 0x002, 0x004, 0x008, 0x010, 0x020, 0x040, 0x080, 0x100
PROTNONE = 0x080                       # in a non-present PTE
PDE_USER = 0x067                       # P | RW | US | A | D, as pmd_populate makes it
ENTRY_PDPT = 0x001                     # a pae PDPT entry: P alone
PFN_MASK = (1 << 40) - 1               # frame number: entry bits 12..51

# vm_flags, as Linux numbers them.
VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 0x1, 0x2, 0x4, 0x8

MAX_SWAP_SLOTS = 1 << 24               # a swap entry keeps 24 bits of offset
MAX_FRAMES = (1 << 32) - 1             # frame numbers (and their count) are 32 bits


class Layout(NamedTuple):
    """One paging layout: its levels top first, and the user address space."""

    name: str
    code: int                          # the core's LAYOUT_* number
    levels: int                        # 2, 3 or 4
    level_names: Tuple[str, ...]       # top first: ("pgd", "pud", "pmd", "pte")
    entries: Tuple[int, ...]           # entries per table, top first
    shifts: Tuple[int, ...]            # address bit each level indexes from, top first
    entry_bytes: int                   # 4 or 8
    task_size: int                     # user space is [0, task_size)
    mmap_base: int                     # TASK_UNMAPPED_BASE
    max_memory: int                    # physical memory limit, bytes
    user_entries: int                  # user entries of the pgd
    max_share_level: int               # share_level may be 1 .. this

    def table_span(self, level: int) -> int:
        """Bytes one table of `level` (1 = leaf) maps."""
        return 1 << (self.shifts[self.levels - level] + _bits(self.entries[self.levels - level]))

    def index_of(self, addr: int, level: int) -> int:
        """The index at `level` (1 = leaf) of a virtual address."""
        k = self.levels - level
        return (addr >> self.shifts[k]) & (self.entries[k] - 1)


def _bits(n: int) -> int:
    return n.bit_length() - 1


LAYOUTS = {
    "i386": Layout("i386", 0, 2, ("pgd", "pte"), (1024, 1024), (22, 12), 4,
                   0xC0000000, 0x40000000, 1 << 32, 768, 1),
    "pae": Layout("pae", 1, 3, ("pgd", "pmd", "pte"), (4, 512, 512), (30, 21, 12), 8,
                  0xC0000000, 0x40000000, 1 << 36, 3, 1),
    # the hardware allows 2**46 bytes; lazyvm keeps frame numbers in 32 bits, so
    # x86_64 machines stop one page short of 16 TiB
    "x86_64": Layout("x86_64", 2, 4, ("pgd", "pud", "pmd", "pte"), (512, 512, 512, 512),
                     (39, 30, 21, 12), 8, 0x7FFFFFFFF000, 0x2AAAAAAAB000,
                     MAX_FRAMES * PAGE_SIZE, 256, 3),
}

# i386 names, kept for the code and tests written against 0.1.0.
I386 = LAYOUTS["i386"]
PGDIR_SHIFT = 22
PGDIR_SIZE = 1 << PGDIR_SHIFT          # 4 MiB: what one i386 page table maps
PTRS_PER_PTE = 1024
USER_PTRS_PER_PGD = 768
TASK_SIZE = I386.task_size
MMAP_BASE = I386.mmap_base
MAX_MEMORY = I386.max_memory


def pdx(addr: int) -> int:
    """i386 page-directory index of a virtual address."""
    return addr >> PGDIR_SHIFT


def ptx(addr: int) -> int:
    """i386 page-table index of a virtual address."""
    return (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)


def parse_prot(prot: str) -> str:
    """Normalise a protection string to "", "r" or "rw" (x means r, so "wx" is "rw").
    Raises TypeError for a non-string, ValueError for anything else."""
    if not isinstance(prot, str):
        raise TypeError(f"prot must be a str such as 'rw', not {type(prot).__name__}")
    if len(set(prot)) != len(prot) or not set(prot) <= set("rwx"):
        raise ValueError(f"unknown protection {prot!r}: use '', 'r' or 'rw' (x means r)")
    if "w" in prot and not set(prot) & set("rx"):
        raise ValueError(f"unknown protection {prot!r}: write-only does not exist")
    if "w" in prot:
        return "rw"
    return "r" if prot else ""


def vm_flags(prot: str, shared: bool) -> int:
    """vm_flags of a VMA with normalised protection prot."""
    fl = VM_SHARED if shared else 0
    if "r" in prot:
        fl |= VM_READ
    if "w" in prot:
        fl |= VM_WRITE
    return fl
