/* CRC-32C (Castagnoli), the checksum of every WAL frame (docs/format.md).
 *
 * Called straight from the compiled scan and framing loops of _fast.pyx, so
 * a record's checksum costs no Python call.  Two implementations, picked
 * once at run time by stemedb_crc32c_init():
 *
 *   - x86-64 with SSE4.2: the crc32 instruction, 8 bytes at a time.  The
 *     function carries a target("sse4.2") attribute, so the module is built
 *     without -msse4.2 and still loads and runs on a CPU without it;
 *   - everywhere else: a portable slicing-by-8 table.
 *
 * Same answers as google_crc32c.value (the reference in the parity tests,
 * tests/unit/test_fast_parity.py): initial value and final xor 0xFFFFFFFF,
 * reflected polynomial 0x82F63B78.  stemedb_crc32c_set_hw(0) forces the
 * table, so the tests check both paths on one machine.
 */
#ifndef STEMEDB_CRC32C_H
#define STEMEDB_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define STEMEDB_CRC32C_POLY 0x82F63B78u

static uint32_t stemedb_crc32c_table[8][256];
static int stemedb_crc32c_hw_ok = 0;    /* the CPU has the instruction */
static int stemedb_crc32c_use_hw = 0;   /* and it is in use */

static uint32_t stemedb_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    const uint32_t (*t)[256] = (const uint32_t (*)[256])stemedb_crc32c_table;
    while (n && ((uintptr_t)p & 7)) {
        crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        lo = __builtin_bswap32(lo);
        hi = __builtin_bswap32(hi);
#endif
        lo ^= crc;
        crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff]
            ^ t[4][lo >> 24] ^ t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff]
            ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define STEMEDB_CRC32C_X86 1
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t stemedb_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

/* Build the table and detect the instruction; call once, before any use. */
static void stemedb_crc32c_init(void)
{
    uint32_t i, k, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ STEMEDB_CRC32C_POLY : c >> 1;
        stemedb_crc32c_table[0][i] = c;
    }
    for (i = 0; i < 256; i++) {
        c = stemedb_crc32c_table[0][i];
        for (k = 1; k < 8; k++) {
            c = stemedb_crc32c_table[0][c & 0xff] ^ (c >> 8);
            stemedb_crc32c_table[k][i] = c;
        }
    }
#ifdef STEMEDB_CRC32C_X86
    __builtin_cpu_init();
    stemedb_crc32c_hw_ok = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    stemedb_crc32c_use_hw = stemedb_crc32c_hw_ok;
}

/* CRC-32C of n bytes at p (what google_crc32c.value gives). */
static inline uint32_t stemedb_crc32c(const uint8_t *p, size_t n)
{
#ifdef STEMEDB_CRC32C_X86
    if (stemedb_crc32c_use_hw)
        return ~stemedb_crc32c_hw(0xFFFFFFFFu, p, n);
#endif
    return ~stemedb_crc32c_sw(0xFFFFFFFFu, p, n);
}

/* 1: use the instruction when the CPU has it; 0: the table.  Returns the
 * path now in use (1 = instruction).  A test hook. */
static int stemedb_crc32c_set_hw(int on)
{
    stemedb_crc32c_use_hw = on && stemedb_crc32c_hw_ok;
    return stemedb_crc32c_use_hw;
}

static int stemedb_crc32c_hw_active(void)
{
    return stemedb_crc32c_use_hw;
}

#endif /* STEMEDB_CRC32C_H */
