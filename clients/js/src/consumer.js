'use strict';
/**
 * A small consumer: fetch from an offset of one partition, decode the batches.
 *
 *   const consumer = new Consumer('127.0.0.1:9091');
 *   let offset = await consumer.offset('orders', 0, 'earliest');
 *   const { records, nextOffset } = await consumer.fetch('orders', 0, offset, { maxWaitMs: 500 });
 *
 * Positions are the caller's: pass `nextOffset` to the next fetch. Fetches go
 * to the partition's leader and follow NOT_LEADER like the producer.
 */

const { Cluster, toNumber } = require('./cluster');
const { decodeBatch, iterBatches } = require('./recordBatch');

class Consumer {
  /**
   * @param {string|string[]} bootstrap  "host:port[,host:port...]"
   * @param {object} [options]
   *   maxBytes: soft cap per fetch; at least one whole batch is returned (1 MiB)
   *   maxWaitMs: how long the leader may hold a fetch waiting for data (500 ms)
   *   retryTimeoutMs: how long retriable errors are retried per call (30 s)
   *   requestTimeoutMs, retryBackoffMs, retryBackoffMsMax, topicWaitMs: see cluster.js
   */
  constructor(bootstrap, options = {}) {
    const { maxBytes = 1024 * 1024, maxWaitMs = 500, retryTimeoutMs = 30_000, ...clusterOptions } = options;
    Object.assign(this, { maxBytes, maxWaitMs, retryTimeoutMs });
    this.cluster = new Cluster(bootstrap, clusterOptions);
    this.stats = { fetches: 0, records: 0, redirects: 0 };
  }

  /**
   * Records of `topic`/`partition` from `offset` on, up to the high watermark:
   * resolves to `{ records, nextOffset, highWatermark, logStartOffset }`, each
   * record `{ topic, partition, offset, timestampMs, key, value, headers }`
   * (keys and values are Buffers or null, headers `[string, Buffer|null]`
   * pairs). `records` is empty if nothing arrived within maxWaitMs. Rejects with
   * a MillpondError (OFFSET_OUT_OF_RANGE with logStartOffset and highWatermark,
   * UNKNOWN_TOPIC, UNKNOWN_PARTITION, or the last retriable error) or an
   * InvalidBatch/CorruptBatch if the bytes do not decode.
   */
  async fetch(topic, partition, offset, { maxBytes = this.maxBytes, maxWaitMs = this.maxWaitMs } = {}) {
    const response = await this.#call(topic, partition, 'Fetch',
      { topic, partition, offset: String(offset), maxBytes, maxWaitMs },
      this.cluster.options.requestTimeoutMs + maxWaitMs);
    const records = [];
    let nextOffset = offset;
    for (const batch of iterBatches(response.batches)) {
      const { header, records: decoded } = decodeBatch(batch);
      for (const record of decoded) {
        if (record.offset >= offset) records.push({ topic, partition, ...record }); // a batch may start before offset
      }
      // The batch's end, not its last record: compaction may have removed its last records, or all.
      nextOffset = Math.max(nextOffset, header.baseOffset + header.lastOffsetDelta + 1);
    }
    this.stats.fetches++;
    this.stats.records += records.length;
    return {
      records,
      nextOffset,
      highWatermark: toNumber(response.highWatermark),
      logStartOffset: toNumber(response.logStartOffset),
    };
  }

  /**
   * An offset of `topic`/`partition`: 'earliest' (the log start offset),
   * 'latest' (the high watermark), or `{ timestampMs }` (the first offset whose
   * record timestamp is >= it; the high watermark if none).
   */
  async offset(topic, partition, spec) {
    const request = { topic, partition };
    if (spec === 'earliest') request.earliest = true;
    else if (spec === 'latest') request.latest = true;
    else if (Number.isSafeInteger(spec?.timestampMs)) request.timestampMs = String(spec.timestampMs);
    else throw new TypeError(`offset spec must be 'earliest', 'latest' or { timestampMs }, got ${JSON.stringify(spec)}`);
    return toNumber((await this.#call(topic, partition, 'ListOffsets', request)).offset);
  }

  #call(topic, partition, method, request, timeoutMs) {
    return this.cluster.callLeader(topic, partition, method, request, {
      deadlineMs: Date.now() + this.retryTimeoutMs, timeoutMs, onRedirect: () => this.stats.redirects++,
    });
  }

  /** Close the connections. */
  close() {
    this.cluster.close();
  }
}

module.exports = { Consumer };
