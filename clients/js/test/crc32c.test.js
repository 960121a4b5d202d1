'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { crc32c } = require('../src/crc32c');

/** One bit at a time, straight from the definition: the table-driven code must agree. */
function bitwise(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

test('the check value of the spec: crc32c("123456789") = 0xE3069283', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(0)), 0);
});

test('known CRC-32C values (RFC 3720, iSCSI)', () => {
  assert.equal(crc32c(Buffer.alloc(32, 0x00)), 0x8a9136aa);
  assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
  assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
});

test('agrees with the bitwise definition for every length and alignment', () => {
  let seed = 1;
  const bytes = Buffer.from(Array.from({ length: 300 }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24));
  for (let start = 0; start < 9; start++) {
    for (let end = start; end <= bytes.length; end += 7) {
      assert.equal(crc32c(bytes, start, end), bitwise(bytes.subarray(start, end)), `bytes [${start}, ${end})`);
    }
  }
});
