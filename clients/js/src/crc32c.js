'use strict';
/**
 * CRC-32C (Castagnoli), table-driven, in pure JavaScript.
 *
 * Polynomial 0x1EDC6F41 (reflected 0x82F63B78), initial value and final XOR
 * 0xFFFFFFFF: crc32c(Buffer.from('123456789')) === 0xE3069283
 * (docs/record-format.md, "The CRC"). "Slicing by 8": eight 256-entry tables
 * let the main loop consume eight bytes per iteration.
 */

const POLY = 0x82f63b78;

/** TABLES[k][b]: the CRC of byte b followed by k zero bytes. */
const TABLES = (() => {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let b = 0; b < 256; b++) {
    let crc = b;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ POLY : crc >>> 1;
    tables[0][b] = crc;
  }
  for (let b = 0; b < 256; b++) {
    for (let k = 1; k < 8; k++) {
      const previous = tables[k - 1][b];
      tables[k][b] = (previous >>> 8) ^ tables[0][previous & 0xff];
    }
  }
  return tables;
})();

/**
 * CRC-32C of bytes [start, end) of `buf` (a Uint8Array or Buffer), as an
 * unsigned 32-bit number.
 */
function crc32c(buf, start = 0, end = buf.length) {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES;
  let crc = 0xffffffff;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const lo = crc ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24));
    crc = t7[lo & 0xff] ^ t6[(lo >>> 8) & 0xff] ^ t5[(lo >>> 16) & 0xff] ^ t4[lo >>> 24] ^
      t3[buf[i + 4]] ^ t2[buf[i + 5]] ^ t1[buf[i + 6]] ^ t0[buf[i + 7]];
  }
  for (; i < end; i++) crc = (crc >>> 8) ^ t0[(crc ^ buf[i]) & 0xff];
  return (crc ^ 0xffffffff) >>> 0;
}

module.exports = { crc32c };
