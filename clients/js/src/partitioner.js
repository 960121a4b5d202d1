'use strict';
/**
 * Choosing a partition, exactly as millpond/partitioner.py and Kafka do
 * (docs/record-format.md, "Partitioning"):
 *
 *   keyed:   (murmur2(key) & 0x7fffffff) % partitions   (Kafka's murmur2)
 *   keyless: a StickyPartitioner: one partition per batch, then the next.
 */

const M = 0x5bd1e995;
const SEED = 0x9747b28c;

/**
 * Kafka's MurmurHash2 of `data` (a Buffer or Uint8Array) as a signed 32-bit
 * integer, what Java's `Utils.murmur2` returns. Math.imul multiplies modulo 2^32
 * and `>>>` is the logical shift that Java writes `>>>`.
 */
function murmur2(data) {
  const length = data.length;
  let h = SEED ^ length;
  const tail = length - (length & 3);
  for (let i = 0; i < tail; i += 4) {
    let k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M) ^ k;
  }
  switch (length & 3) { // the last 1-3 bytes, falling through as in Java
    case 3: h ^= data[tail + 2] << 16; // falls through
    case 2: h ^= data[tail + 1] << 8; // falls through
    case 1: h ^= data[tail]; h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/** The partition of a keyed record: `(murmur2(key) & 0x7fffffff) % partitions`. */
function partitionForKey(key, partitions) {
  if (!Number.isInteger(partitions) || partitions < 1) {
    throw new RangeError(`partitions must be a positive integer, got ${partitions}`);
  }
  return (murmur2(key) & 0x7fffffff) % partitions;
}

/**
 * Keyless records go to the current partition until the producer closes that
 * partition's batch (`batchCompleted(p)`), then to the next one, wrapping
 * around. A notice about a partition that is not the current one is ignored.
 */
class StickyPartitioner {
  constructor(start = Math.floor(Math.random() * 0x7fffffff)) {
    this.position = start;
  }

  /** The partition for the next keyless record of a topic with `partitions` partitions. */
  partition(partitions) {
    return this.position % partitions;
  }

  /** The batch of partition `p` (of `partitions`) was closed: move on if it was the current one. */
  batchCompleted(p, partitions) {
    if (p === this.position % partitions) this.position = (this.position % partitions) + 1;
  }
}

module.exports = { murmur2, partitionForKey, StickyPartitioner };
