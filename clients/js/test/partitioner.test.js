'use strict';
/** murmur2 and the partitioners against the vectors of docs/record-format.md, read from the spec itself. */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { murmur2, partitionForKey, StickyPartitioner } = require('../src/partitioner');

const SPEC = fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'docs', 'record-format.md'), 'utf8');

/** The murmur2 table of the spec: { key, signed, hex, positive, mod: { 3, 8, 12, 100 } } per row. */
function murmur2Vectors() {
  const section = SPEC.slice(SPEC.indexOf('## Partitioning'));
  return [...section.matchAll(/^\| (`[^`]*`|\*\(empty\)\*) \| (-?\d+) \| `([0-9a-f]{8})` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$/gm)]
    .map(([, key, signed, hex, positive, m3, m8, m12, m100]) => ({
      key: key.startsWith('`') ? key.slice(1, -1) : '',
      signed: Number(signed),
      hex,
      positive: Number(positive),
      mod: { 3: Number(m3), 8: Number(m8), 12: Number(m12), 100: Number(m100) },
    }));
}

const vectors = murmur2Vectors();

test('the spec lists the twelve murmur2 vectors (Kafka\'s own among them)', () => {
  assert.equal(vectors.length, 12);
  assert.deepEqual(vectors.slice(0, 2).map((v) => [v.key, v.signed]), [['21', -973932308], ['foobar', -790332482]]);
});

for (const { key, signed, hex, positive, mod } of vectors) {
  test(`murmur2(${JSON.stringify(key)}) = ${signed} and its partitions`, () => {
    const hash = murmur2(Buffer.from(key, 'ascii'));
    assert.equal(hash, signed);
    assert.equal((hash >>> 0).toString(16).padStart(8, '0'), hex);
    assert.equal(hash & 0x7fffffff, positive);
    for (const [n, partition] of Object.entries(mod)) assert.equal(partitionForKey(Buffer.from(key), Number(n)), partition);
  });
}

test('murmur2 hashes bytes, not text: high bytes are unsigned', () => {
  // Each byte >= 0x80 must enter as 0..255, never sign-extended.
  assert.notEqual(murmur2(Buffer.from([0xff])), murmur2(Buffer.from([0x7f])));
  assert.equal(murmur2(new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x01])), murmur2(Buffer.from('deadbeef01', 'hex')));
});

test('partitionForKey refuses a partition count below 1', () => {
  assert.throws(() => partitionForKey(Buffer.from('k'), 0), RangeError);
});

test('sticky partitioner: one partition per batch, next after batchCompleted, stale notices ignored', () => {
  const sticky = new StickyPartitioner(2);
  assert.equal(sticky.partition(3), 2);
  sticky.batchCompleted(1, 3); // not the current one: ignored
  assert.equal(sticky.partition(3), 2);
  sticky.batchCompleted(2, 3);
  assert.equal(sticky.partition(3), 0);
  sticky.batchCompleted(0, 3);
  sticky.batchCompleted(0, 3); // repeated: ignored
  assert.equal(sticky.partition(3), 1);
  assert.equal(sticky.partition(5), 1); // partitions grew: the current one is kept
});
