'use strict';
/** The record batch codec against docs/record-format.md: the worked example's bytes, read from the spec. */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const {
  encodeBatch, decodeBatch, iterBatches, parseHeader, recordSizeBytes, stamp, CorruptBatch, InvalidBatch, limits,
} = require('../src/recordBatch');
const { crc32c } = require('../src/crc32c');

const SPEC = fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'docs', 'record-format.md'), 'utf8');

/** The worked example's bytes: the hex dump rows ("0000  4d 50 42 ...   comment") of the spec. */
function goldenBatch() {
  const section = SPEC.slice(SPEC.indexOf('## A worked example'), SPEC.indexOf('## Implementing it'));
  const rows = [...section.matchAll(/^([0-9a-f]{4}) {2}((?:[0-9a-f]{2} ?)+)/gm)];
  rows.forEach(([, at], i) => assert.equal(parseInt(at, 16), 16 * i, `hex dump row ${i}`));
  return Buffer.from(rows.map(([, , bytes]) => bytes.replace(/ /g, '')).join(''), 'hex');
}

const GOLDEN = goldenBatch();
const GOLDEN_RECORDS = [
  { key: Buffer.from('k'), value: Buffer.from('v1'), headers: [['h', Buffer.from('x')]], timestampMs: 1_700_000_000_000 },
  { key: null, value: null, headers: [], timestampMs: 1_700_000_000_005 },
];
const GOLDEN_OPTIONS = { producerId: 7, producerEpoch: 1, baseSequence: 42 };

test('the worked example: encode + stamp gives the spec\'s 125 bytes exactly', () => {
  assert.equal(GOLDEN.length, 125);
  assert.equal(GOLDEN.toString('hex').slice(0, 16), '4d5042010000007d');
  const encoded = encodeBatch(GOLDEN_RECORDS, GOLDEN_OPTIONS);
  assert.equal(encoded.readBigInt64BE(8), 0n, 'a producer writes base offset 0');
  assert.equal(encoded.readInt32BE(16), -1, 'a producer writes leader epoch -1');
  assert.equal(stamp(encoded, 100, 3).toString('hex'), GOLDEN.toString('hex'));
});

test('the worked example decodes to its records, offsets 100 and 101', () => {
  const { header, records } = decodeBatch(GOLDEN);
  assert.deepEqual(header, {
    length: 125, baseOffset: 100, leaderEpoch: 3, crc: 0xa11f2875, attributes: 0, producerEpoch: 1,
    lastOffsetDelta: 1, firstTimestampMs: 1_700_000_000_000, maxTimestampMs: 1_700_000_000_005,
    producerId: 7, baseSequence: 42, recordCount: 2,
  });
  assert.deepEqual(records, GOLDEN_RECORDS.map((r, i) => ({ offset: 100 + i, ...r })));
  assert.equal(crc32c(GOLDEN, 24), 0xa11f2875);
});

test('stamping leaves the CRC valid: bytes 8-19 are not covered', () => {
  const batch = encodeBatch(GOLDEN_RECORDS, GOLDEN_OPTIONS);
  const crc = batch.readUInt32BE(20);
  stamp(batch, 2 ** 40, 77);
  assert.equal(batch.readUInt32BE(20), crc);
  assert.equal(decodeBatch(batch).records[1].offset, 2 ** 40 + 1);
});

test('round trip: null vs empty, binary bytes, repeated and UTF-8 header keys, far-apart timestamps', () => {
  const records = [
    { key: Buffer.alloc(0), value: Buffer.alloc(0), headers: [], timestampMs: 5_000 },
    { key: Buffer.from([0, 0xff, 0x80]), value: null, headers: [['a', null], ['a', Buffer.alloc(0)], ['ключ-🙂', Buffer.from([1])]], timestampMs: 1 },
    { key: null, value: Buffer.alloc(70_000, 0xab), headers: [['x'.repeat(256), Buffer.from('v')]], timestampMs: 2 ** 52 },
  ];
  const batch = encodeBatch(records);
  assert.equal(batch.length, 64 + records.reduce((sum, r) => sum + recordSizeBytes(r), 0));
  const { header, records: decoded } = decodeBatch(batch);
  assert.equal(header.firstTimestampMs, 5_000);
  assert.equal(header.maxTimestampMs, 2 ** 52);
  assert.equal(header.producerId, -1);
  assert.deepEqual(decoded, records.map((r, i) => ({ offset: i, ...r })));
});

test('strings are UTF-8 bytes; a record without timestampMs takes the batch\'s', () => {
  const { records } = decodeBatch(encodeBatch([{ key: 'é', value: 'v', headers: [['h', 'x']] }], { timestampMs: 9 }));
  assert.deepEqual(records, [{ offset: 0, timestampMs: 9, key: Buffer.from('é'), value: Buffer.from('v'), headers: [['h', Buffer.from('x')]] }]);
});

test('every bit flip in the CRC-covered bytes is reported as corruption', () => {
  const batch = encodeBatch(GOLDEN_RECORDS, GOLDEN_OPTIONS);
  for (let at = 24; at < batch.length; at++) {
    const damaged = Buffer.from(batch);
    damaged[at] ^= 0x01;
    assert.throws(() => decodeBatch(damaged), (error) => error instanceof CorruptBatch && error.reason === 'crc', `byte ${at}`);
  }
});

test('framing errors: magic, version, length, truncation', () => {
  const batch = encodeBatch(GOLDEN_RECORDS);
  const damaged = (at, value) => Object.assign(Buffer.from(batch), { [at]: value });
  const reason = (buf, expected) => assert.throws(() => decodeBatch(buf), (e) => e instanceof InvalidBatch && e.reason === expected);
  reason(damaged(0, 0x4e), 'magic');
  reason(damaged(3, 2), 'version');
  reason(batch.subarray(0, 100), 'length');
  reason(batch.subarray(0, 10), 'too_short');
});

test('columns that do not add up are refused even with a valid CRC', () => {
  const batch = encodeBatch([{ key: 'k', value: 'v', timestampMs: 1 }]);
  batch.writeInt32BE(2, 64 + 8 + 4); // key length 2: one byte more than the batch holds
  batch.writeUInt32BE(crc32c(batch, 24), 20);
  assert.throws(() => decodeBatch(batch), (e) => e.reason === 'records');
});

test('a log-append-time batch reports its max timestamp for every record', () => {
  const batch = encodeBatch(GOLDEN_RECORDS);
  batch.writeUInt16BE(0x0008, 24);
  batch.writeBigInt64BE(1_800_000_000_000n, 40);
  batch.writeUInt32BE(crc32c(batch, 24), 20);
  assert.deepEqual(decodeBatch(batch).records.map((r) => r.timestampMs), [1_800_000_000_000, 1_800_000_000_000]);
});

test('iterBatches splits a fetch response; a cut-off batch is an error', () => {
  const a = stamp(encodeBatch(GOLDEN_RECORDS), 0, 1);
  const b = stamp(encodeBatch([{ key: 'z', value: 'zz', timestampMs: 3 }]), 2, 1);
  const both = Buffer.concat([a, b]);
  assert.deepEqual([...iterBatches(both)].map((batch) => parseHeader(batch).baseOffset), [0, 2]);
  assert.deepEqual([...iterBatches(Buffer.alloc(0))], []);
  assert.throws(() => [...iterBatches(both.subarray(0, both.length - 1))], (e) => e.reason === 'too_short');
});

test('encodeBatch refuses what the broker would refuse', () => {
  const one = (record, options) => () => encodeBatch([{ key: 'k', value: 'v', timestampMs: 1, ...record }], options);
  assert.throws(() => encodeBatch([]), RangeError);
  assert.throws(one({ timestampMs: -1 }), RangeError);
  assert.throws(one({ headers: Array.from({ length: 65 }, () => ['h', null]) }), RangeError);
  assert.throws(one({ headers: [['x'.repeat(257), null]] }), RangeError);
  assert.throws(one({ value: Buffer.alloc(limits.batchBytesMax) }), RangeError);
  assert.throws(one({}, { producerEpoch: 1 }), RangeError, 'an epoch needs a producer id');
  assert.throws(one({ key: 42 }), TypeError);
  assert.throws(one({ headers: [[1, null]] }), TypeError);
});
