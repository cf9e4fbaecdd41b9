"""Helpers shared by the named tests."""


def u32(m, off):
    """The little-endian uint32 at byte offset off of physical memory."""
    return int(m.physical[off:off + 4].view("<u4")[0])
