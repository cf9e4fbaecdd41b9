"""The i386 (non-PAE) address layout and entry bits, for the Python layer.

    31            22 21            12 11            0
   +----------------+----------------+---------------+
   |  PDX (10 bits) |  PTX (10 bits) | offset (12)   |
   +----------------+----------------+---------------+

The compiled core has the same constants in lazyvm/_core.pxd.
"""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PGDIR_SHIFT = 22
PGDIR_SIZE = 1 << PGDIR_SHIFT          # 4 MiB: what one page table maps
PTRS_PER_PTE = 1024
USER_PTRS_PER_PGD = 768
TASK_SIZE = 0xC0000000                 # user space is [0, TASK_SIZE)
MMAP_BASE = 0x40000000                 # TASK_UNMAPPED_BASE: where mmap looks first
MAX_MEMORY = 1 << 32                   # non-PAE: at most 2**20 frames
MAX_SWAP_SLOTS = 1 << 24               # a swap entry keeps 24 bits of offset

# Entry bits (PTE and PDE).
P, RW, US, PWT, PCD, A, D, PS, G = 0x001, 0x002, 0x004, 0x008, 0x010, 0x020, 0x040, 0x080, 0x100
PROTNONE = 0x080                       # in a non-present PTE
PDE_USER = 0x067                       # P | RW | US | A | D, as pmd_populate makes it

# vm_flags, as Linux numbers them.
VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 0x1, 0x2, 0x4, 0x8


def pdx(addr):
    """Page-directory index of a virtual address."""
    return addr >> PGDIR_SHIFT


def ptx(addr):
    """Page-table index of a virtual address."""
    return (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)


def parse_prot(prot):
    """Normalise a protection string to "", "r" or "rw" (x means r on i386, so "wx"
    is "rw").
    Raises ValueError for anything else."""
    if not isinstance(prot, str) or len(set(prot)) != len(prot) or not set(prot) <= set("rwx"):
        raise ValueError(f"unknown protection {prot!r}: use '', 'r' or 'rw' (x means r)")
    if "w" in prot and not set(prot) & set("rx"):
        raise ValueError(f"unknown protection {prot!r}: write-only does not exist on i386")
    if "w" in prot:
        return "rw"
    return "r" if prot else ""


def vm_flags(prot, shared):
    """vm_flags of a VMA with normalised protection prot."""
    fl = VM_SHARED if shared else 0
    if "r" in prot:
        fl |= VM_READ
    if "w" in prot:
        fl |= VM_WRITE
    return fl
