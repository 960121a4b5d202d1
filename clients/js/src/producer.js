'use strict';
/**
 * A small producer: `send(topic, records)` partitions the records, encodes one
 * or more batches per partition and produces them to each partition's leader.
 *
 *   keyed record    -> (murmur2(key) & 0x7fffffff) % partitions   (as the Python client and Kafka)
 *   keyless record  -> the topic's sticky partition (the next one after each call)
 *   `partition` set -> that partition
 *
 * Batches of one partition are sent one after another, in record order;
 * partitions are sent in parallel. Retriable errors are retried until
 * deliveryTimeoutMs; NOT_LEADER is followed to the leader its trailer names.
 * Delivery is at least once: a Produce that timed out may have been appended,
 * and its retry appends the records again.
 */

const { Cluster, toNumber } = require('./cluster');
const { encodeBatch, recordSizeBytes, toBytes, HEADER_BYTES, limits } = require('./recordBatch');
const { partitionForKey, StickyPartitioner } = require('./partitioner');

const ACKS = { 0: 'ACKS_NONE', 1: 'ACKS_LEADER', all: 'ACKS_ALL', '-1': 'ACKS_ALL' };

class Producer {
  /**
   * @param {string|string[]} bootstrap  "host:port[,host:port...]"
   * @param {object} [options]
   *   acks: 0 | 1 | 'all' (default 'all': committed by a Raft majority with fsync)
   *   batchBytes: a batch (64-byte header included) is closed before a record would pass this (1 MiB)
   *   deliveryTimeoutMs: per batch, retries included (30 s)
   *   requestTimeoutMs, retryBackoffMs, retryBackoffMsMax, topicWaitMs: see cluster.js
   */
  constructor(bootstrap, options = {}) {
    const { acks = 'all', batchBytes = 1024 * 1024, deliveryTimeoutMs = 30_000, ...clusterOptions } = options;
    if (!(String(acks) in ACKS)) throw new RangeError(`acks must be 0, 1 or 'all', got ${acks}`);
    this.acks = ACKS[String(acks)];
    this.batchBytes = Math.min(batchBytes, limits.batchBytesMax);
    this.deliveryTimeoutMs = deliveryTimeoutMs;
    this.cluster = new Cluster(bootstrap, clusterOptions);
    this.sticky = new Map();
    /** Counters: batches and records acknowledged, NOT_LEADER answers followed. */
    this.stats = { batches: 0, records: 0, redirects: 0 };
  }

  /**
   * Send `records` (objects `{ key, value, headers, timestampMs, partition }`,
   * see recordBatch.js; a missing timestampMs is now) to `topic`. Resolves,
   * once every batch is acknowledged, to one `{ topic, partition, offset,
   * timestampMs }` per record, in the order given (offset -1 with acks 0).
   * Rejects with a MillpondError (UNKNOWN_TOPIC, INVALID_RECORD_BATCH,
   * BATCH_TOO_LARGE, or the last retriable error once deliveryTimeoutMs
   * passed), or RangeError/TypeError for records that cannot be encoded.
   */
  async send(topic, records) {
    const partitions = (await this.cluster.partitions(topic)).length;
    const now = Date.now();
    let sticky = this.sticky.get(topic);
    if (!sticky) this.sticky.set(topic, sticky = new StickyPartitioner());
    const stickyPartition = sticky.partition(partitions);

    const byPartition = new Map(); // partition -> indexes into records, in order
    records.forEach((record, index) => {
      const key = toBytes(record.key, `record ${index} key`);
      const partition = record.partition ?? (key === null ? stickyPartition : partitionForKey(key, partitions));
      if (!(Number.isInteger(partition) && partition >= 0 && partition < partitions)) {
        throw new RangeError(`record ${index}: partition ${partition} outside [0, ${partitions})`);
      }
      if (!byPartition.has(partition)) byPartition.set(partition, []);
      byPartition.get(partition).push(index);
    });
    if (byPartition.has(stickyPartition)) sticky.batchCompleted(stickyPartition, partitions);

    // Encode every batch before sending any, so that a record that cannot be encoded sends nothing.
    const plan = [...byPartition].map(([partition, indexes]) => {
      const batches = [...this.#split(indexes.map((i) => ({ ...records[i], timestampMs: records[i].timestampMs ?? now })))];
      return { partition, indexes, batches: batches.map((batch) => ({ records: batch, bytes: encodeBatch(batch) })) };
    });
    const acks = new Array(records.length);
    await Promise.all(plan.map(async ({ partition, indexes, batches }) => {
      let next = 0; // indexes[next]: the index in `records` of the next batch's first record
      for (const batch of batches) {
        const baseOffset = await this.#produce(topic, partition, batch.bytes);
        for (const [i, { timestampMs }] of batch.records.entries()) {
          acks[indexes[next++]] = { topic, partition, offset: baseOffset < 0 ? -1 : baseOffset + i, timestampMs };
        }
      }
    }));
    return acks;
  }

  /** Split the records of one partition into batches of at most batchBytes (a larger record goes alone). */
  * #split(records) {
    let batch = [];
    let size = HEADER_BYTES;
    for (const record of records) {
      const bytes = recordSizeBytes(record);
      if (batch.length && (size + bytes > this.batchBytes || batch.length === limits.batchRecordsMax)) {
        yield batch;
        batch = [];
        size = HEADER_BYTES;
      }
      batch.push(record);
      size += bytes;
    }
    if (batch.length) yield batch;
  }

  /** Produce one encoded batch to the leader; resolve to its base offset. */
  async #produce(topic, partition, batch) {
    const response = await this.cluster.callLeader(topic, partition, 'Produce',
      { topic, partition, acks: this.acks, batch },
      { deadlineMs: Date.now() + this.deliveryTimeoutMs, onRedirect: () => this.stats.redirects++ });
    this.stats.batches++;
    this.stats.records += batch.readInt32BE(60);
    return toNumber(response.baseOffset);
  }

  /** Close the connections (once no send is pending). */
  close() {
    this.cluster.close();
  }
}

module.exports = { Producer };
