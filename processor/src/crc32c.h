// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every log record. Uses the
// SSE 4.2 crc32 instruction when the CPU has it, a slicing-by-8 table otherwise; both give the same
// value. Pure function; any thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tally::processor {

// Extends `crc` (0 to start) over `n` bytes: crc32c(b, crc32c(a)) == crc32c(a + b).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// The table-driven implementation alone (tests compare it with the hardware one).
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);

}  // namespace tally::processor
