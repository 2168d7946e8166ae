"""machine.mem8, mem16 and mem32 of the simulated ESP32: the address space as
the CPU sees it. Addresses must be aligned to the access size (ValueError, as
extmod/machine_mem.c). Words live in board.mem (address -> value, 0 unless a
test or model set it; cleared at each boot, as registers reset). An address
outside the ESP32's memory map, or a byte or half-word access on the
instruction bus, is a CPU exception on the chip: a panic that resets it
(reset_cause() HARD_RESET, as the port maps ESP_RST_PANIC).
"""

from simboard import board
from simclock import HARD_RESET

# (start, end, instruction bus) from the ESP32 Technical Reference Manual's map
_REGIONS = (
    (0x3F400000, 0x3F800000, False),  # external flash, data (cache)
    (0x3FF00000, 0x3FF80000, False),  # peripherals (DPort)
    (0x3FF80000, 0x3FF82000, False),  # RTC FAST memory
    (0x3FF90000, 0x3FFA0000, False),  # internal ROM 1
    (0x3FFAE000, 0x40000000, False),  # internal SRAM, data
    (0x40000000, 0x40060000, True),  # internal ROM 0
    (0x40070000, 0x400C0000, True),  # internal SRAM, instructions
    (0x400C0000, 0x400C2000, True),  # RTC FAST memory, instructions
    (0x400C2000, 0x40C00000, True),  # external flash, instructions (cache)
    (0x50000000, 0x50002000, False),  # RTC SLOW memory
    (0x60000000, 0x60040000, False),  # peripherals (AHB)
)


def _addr(addr, size, store):
    addr &= 0xFFFFFFFF
    if addr & (size - 1):
        raise ValueError("address %08x is not aligned to %d bytes" % (addr, size))
    for lo, hi, ibus in _REGIONS:
        if lo <= addr < hi:
            if ibus and size < 4:
                board.halt(HARD_RESET, 0, "Guru Meditation Error: Core 1 panic'ed (LoadStoreError)")
            return addr
    board.halt(HARD_RESET, 0, "Guru Meditation Error: Core 1 panic'ed (%s)"
               % ("StoreProhibited" if store else "LoadProhibited"))


class Mem:
    def __init__(self, size):
        self.size = size

    def __getitem__(self, addr):
        board.alive()
        a = _addr(addr, self.size, False)
        word = board.mem.get(a & ~3, 0)
        shift = 8 * (a & 3)  # little-endian
        return (word >> shift) & ((1 << (8 * self.size)) - 1)

    def __setitem__(self, addr, value):
        board.alive()
        a = _addr(addr, self.size, True)
        shift = 8 * (a & 3)
        mask = ((1 << (8 * self.size)) - 1) << shift
        word = board.mem.get(a & ~3, 0)
        board.mem[a & ~3] = (word & ~mask & 0xFFFFFFFF) | ((value << shift) & mask)

    def __repr__(self):
        return "<%d-bit memory>" % (8 * self.size)


mem8 = Mem(1)
mem16 = Mem(2)
mem32 = Mem(4)
