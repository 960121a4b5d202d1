'use strict';
/**
 * The millpond record batch, version 1: docs/record-format.md, implemented
 * byte for byte (the reference is millpond/record_batch.py).
 *
 * A record is `{ key, value, headers, timestampMs }` where key and value are
 * Buffers or null, headers is an array of `[key: string, value: Buffer | null]`
 * pairs (keys may repeat, order is kept), and timestampMs is a number of ms
 * since the epoch. Decoded records also carry `offset`.
 *
 * 64-bit fields are read as BigInt and handed out as plain numbers; a value
 * beyond Number.MAX_SAFE_INTEGER (2^53 - 1: year 287,396 as a timestamp) is
 * refused with a RangeError rather than silently rounded.
 */

const { crc32c } = require('./crc32c');

const MAGIC = Buffer.from('MPB', 'ascii');
const VERSION = 1;
const HEADER_BYTES = 64;
/** Bytes [CRC_START, length) are covered by the CRC. */
const CRC_START = 24;
/** Per record: timestamp delta (8), offset delta, key length, value length, header count (4 each). */
const RECORD_OVERHEAD_BYTES = 24;
/** Per header: key length and value length. */
const HEADER_OVERHEAD_BYTES = 8;

const ATTRIBUTE_COMPRESSION = 0x0007;
const ATTRIBUTE_LOG_APPEND_TIME = 0x0008;
const ATTRIBUTE_TRANSACTIONAL = 0x0010;

/** Limits (millpond/limits.py). */
const limits = Object.freeze({
  batchBytesMax: 2 * 1024 * 1024,
  batchRecordsMax: 65536,
  recordHeadersMax: 64,
  headerKeyBytesMax: 256,
});

const INT64_MAX = (1n << 63n) - 1n;

/** A batch that cannot be read; `reason` is one of the reasons of the spec's check table. */
class InvalidBatch extends Error {
  constructor(reason, message) {
    super(message);
    this.name = 'InvalidBatch';
    this.reason = reason;
  }
}

/** The CRC does not match the bytes: damaged in transit or storage. */
class CorruptBatch extends InvalidBatch {
  constructor(expected, actual) {
    super('crc', `CRC mismatch: header says 0x${hex32(expected)}, bytes give 0x${hex32(actual)}`);
    this.name = 'CorruptBatch';
    this.expected = expected;
    this.actual = actual;
  }
}

function hex32(n) {
  return n.toString(16).padStart(8, '0');
}

/** A BigInt or number as a safe JS number, or a RangeError naming `what`. */
function toSafeNumber(value, what) {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new RangeError(`${what} ${value} is beyond Number.MAX_SAFE_INTEGER`);
  return n;
}

/** Bytes of a key, value or header value: Buffer, Uint8Array or string (UTF-8); null/undefined is null. */
function toBytes(value, what) {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`${what} must be a Buffer, Uint8Array, string or null, got ${typeof value}`);
}

/** The bytes one record adds to a batch (docs/record-format.md: `record_size_bytes`). */
function recordSizeBytes(record) {
  let size = RECORD_OVERHEAD_BYTES + (toBytes(record.key, 'key')?.length ?? 0) +
    (toBytes(record.value, 'value')?.length ?? 0);
  for (const [key, value] of record.headers ?? []) {
    size += HEADER_OVERHEAD_BYTES + Buffer.byteLength(key, 'utf8') + (toBytes(value, 'header value')?.length ?? 0);
  }
  return size;
}

/**
 * Encode `records` (at least one) into one batch, ready to produce: base offset
 * 0 and leader epoch -1 (the broker stamps both), offset deltas 0..n-1, the
 * first record's timestamp as the first timestamp. A record without
 * `timestampMs` takes `options.timestampMs` (default: now).
 *
 * Options: timestampMs, producerId (-1), producerEpoch (-1), baseSequence (-1),
 * transactional (false). Throws RangeError for anything the broker would
 * refuse (count, header limits, timestamps, producer fields, batchBytesMax),
 * TypeError for a key, value or header of the wrong type.
 */
function encodeBatch(records, options = {}) {
  const {
    timestampMs = Date.now(), producerId = -1, producerEpoch = -1, baseSequence = -1,
    transactional = false,
  } = options;
  const n = records.length;
  if (!(n >= 1 && n <= limits.batchRecordsMax)) {
    throw new RangeError(`a batch holds 1 to ${limits.batchRecordsMax} records, got ${n}`);
  }
  checkProducerFields(BigInt(producerId), producerEpoch, baseSequence, transactional);

  const timestamps = records.map((r) => BigInt(r.timestampMs ?? timestampMs));
  const keys = records.map((r, i) => toBytes(r.key, `record ${i} key`));
  const values = records.map((r, i) => toBytes(r.value, `record ${i} value`));
  const headers = records.map((r, i) => {
    const list = r.headers ?? [];
    if (list.length > limits.recordHeadersMax) {
      throw new RangeError(`record ${i} has ${list.length} headers, more than ${limits.recordHeadersMax}`);
    }
    return list.map(([key, value]) => {
      if (typeof key !== 'string') throw new TypeError(`record ${i}: header keys must be strings`);
      const keyBytes = Buffer.from(key, 'utf8');
      if (keyBytes.length > limits.headerKeyBytesMax) {
        throw new RangeError(`record ${i}: header key of ${keyBytes.length} UTF-8 bytes, more than ${limits.headerKeyBytesMax}`);
      }
      return [keyBytes, toBytes(value, `record ${i} header value`)];
    });
  });
  let first = timestamps[0];
  let max = first;
  timestamps.forEach((t, i) => {
    if (t < 0n || t > INT64_MAX) throw new RangeError(`record ${i} has timestampMs ${t}, outside [0, 2^63-1]`);
    if (t > max) max = t;
  });

  const flat = headers.flat();
  const H = flat.length;
  const payload = [
    ...keys, ...values, ...flat.map(([key]) => key), ...flat.map(([, value]) => value),
  ].filter((bytes) => bytes !== null);
  const length = HEADER_BYTES + RECORD_OVERHEAD_BYTES * n + HEADER_OVERHEAD_BYTES * H +
    payload.reduce((sum, bytes) => sum + bytes.length, 0);
  if (length > limits.batchBytesMax) {
    throw new RangeError(`the batch would be ${length} bytes, more than batchBytesMax=${limits.batchBytesMax}`);
  }

  const buf = Buffer.alloc(length);
  // Bytes 24-63: the CRC-covered part of the header.
  buf.writeUInt16BE(transactional ? ATTRIBUTE_TRANSACTIONAL : 0, 24);
  buf.writeInt16BE(producerEpoch, 26);
  buf.writeInt32BE(n - 1, 28);
  buf.writeBigInt64BE(first, 32);
  buf.writeBigInt64BE(max, 40);
  buf.writeBigInt64BE(BigInt(producerId), 48);
  buf.writeInt32BE(baseSequence, 56);
  buf.writeInt32BE(n, 60);
  // The columns, then the bytes.
  let at = HEADER_BYTES;
  for (const t of timestamps) at = buf.writeBigInt64BE(t - first, at);
  for (let i = 0; i < n; i++) at = buf.writeInt32BE(i, at);
  for (const key of keys) at = buf.writeInt32BE(key === null ? -1 : key.length, at);
  for (const value of values) at = buf.writeInt32BE(value === null ? -1 : value.length, at);
  for (const list of headers) at = buf.writeInt32BE(list.length, at);
  for (const [key] of flat) at = buf.writeInt32BE(key.length, at);
  for (const [, value] of flat) at = buf.writeInt32BE(value === null ? -1 : value.length, at);
  for (const bytes of payload) at += bytes.copy(buf, at);
  // Bytes 0-23: framing, the broker's fields, the CRC.
  MAGIC.copy(buf, 0);
  buf.writeUInt8(VERSION, 3);
  buf.writeInt32BE(length, 4);
  buf.writeBigInt64BE(0n, 8);
  buf.writeInt32BE(-1, 16);
  buf.writeUInt32BE(crc32c(buf, CRC_START, length), 20);
  return buf;
}

function checkProducerFields(producerId, producerEpoch, baseSequence, transactional) {
  if (producerId < -1n || producerId > INT64_MAX) throw new RangeError(`producerId ${producerId} outside [-1, 2^63-1]`);
  if (!(Number.isInteger(producerEpoch) && producerEpoch >= -1 && producerEpoch <= 0x7fff)) {
    throw new RangeError(`producerEpoch ${producerEpoch} outside [-1, 32767]`);
  }
  if (!(Number.isInteger(baseSequence) && baseSequence >= -1 && baseSequence <= 0x7fffffff)) {
    throw new RangeError(`baseSequence ${baseSequence} outside [-1, 2^31-1]`);
  }
  if (producerId === -1n && (producerEpoch !== -1 || baseSequence !== -1 || transactional)) {
    throw new RangeError('producerEpoch, baseSequence and transactional need a producerId');
  }
}

/** Write the broker's fields (bytes 8-19) into a batch; the CRC stays valid. Returns `buf`. */
function stamp(buf, baseOffset, leaderEpoch) {
  buf.writeBigInt64BE(BigInt(baseOffset), 8);
  buf.writeInt32BE(leaderEpoch, 16);
  return buf;
}

/** Check magic, version and that the length field equals `buf.length`. */
function checkFraming(buf) {
  if (buf.length < HEADER_BYTES) throw new InvalidBatch('too_short', `${buf.length} bytes, less than a 64-byte header`);
  if (!buf.subarray(0, 3).equals(MAGIC)) throw new InvalidBatch('magic', 'wrong magic: not a millpond record batch');
  if (buf[3] !== VERSION) throw new InvalidBatch('version', `unsupported batch version ${buf[3]}`);
  const length = buf.readInt32BE(4);
  if (length !== buf.length) {
    throw new InvalidBatch('length', `length mismatch: header says ${length} bytes, buffer holds ${buf.length}`);
  }
}

/**
 * Split a fetch response (whole batches, concatenated) into one Buffer view
 * per batch. Checks only the framing; a batch cut off by the end is an error.
 */
function* iterBatches(buf) {
  let at = 0;
  while (at < buf.length) {
    if (buf.length - at < 8) throw new InvalidBatch('too_short', `truncated batch at byte ${at}`);
    if (!buf.subarray(at, at + 3).equals(MAGIC)) throw new InvalidBatch('magic', `wrong magic at byte ${at}`);
    if (buf[at + 3] !== VERSION) throw new InvalidBatch('version', `unsupported batch version ${buf[at + 3]} at byte ${at}`);
    const length = buf.readInt32BE(at + 4);
    if (length < HEADER_BYTES) throw new InvalidBatch('length', `batch at byte ${at} claims ${length} bytes, less than a header`);
    if (length > buf.length - at) {
      throw new InvalidBatch('too_short', `truncated batch at byte ${at}: ${length} bytes claimed, ${buf.length - at} left`);
    }
    yield buf.subarray(at, at + length);
    at += length;
  }
}

/** The 64-byte header of a batch as an object (its framing checked; 64-bit fields as safe numbers). */
function parseHeader(buf) {
  checkFraming(buf);
  return {
    length: buf.readInt32BE(4),
    baseOffset: toSafeNumber(buf.readBigInt64BE(8), 'base offset'),
    leaderEpoch: buf.readInt32BE(16),
    crc: buf.readUInt32BE(20),
    attributes: buf.readUInt16BE(24),
    producerEpoch: buf.readInt16BE(26),
    lastOffsetDelta: buf.readInt32BE(28),
    firstTimestampMs: toSafeNumber(buf.readBigInt64BE(32), 'first timestamp'),
    maxTimestampMs: toSafeNumber(buf.readBigInt64BE(40), 'max timestamp'),
    producerId: toSafeNumber(buf.readBigInt64BE(48), 'producer id'),
    baseSequence: buf.readInt32BE(56),
    recordCount: buf.readInt32BE(60),
  };
}

/**
 * Decode one whole batch: `{ header, records }`. Checks framing, then the CRC
 * (before any field it covers; CorruptBatch on a mismatch), the count, a zero
 * compression codec, and that the columns add up to the length exactly; offset
 * deltas must increase strictly within [0, last offset delta]. Record offsets
 * are base offset + delta; timestamps first timestamp + delta, or the max
 * timestamp for a log-append-time batch. Throws InvalidBatch otherwise.
 */
function decodeBatch(buf) {
  checkFraming(buf);
  const expected = buf.readUInt32BE(20);
  const actual = crc32c(buf, CRC_START, buf.length);
  if (expected !== actual) throw new CorruptBatch(expected, actual);
  const header = parseHeader(buf);
  const n = header.recordCount;
  const length = buf.length;
  if (n < 0 || HEADER_BYTES + RECORD_OVERHEAD_BYTES * n > length) {
    throw new InvalidBatch('count', `record count ${n} out of range for a ${length}-byte batch`);
  }
  if (header.attributes & ATTRIBUTE_COMPRESSION) {
    throw new InvalidBatch('attributes', `compression codec ${header.attributes & ATTRIBUTE_COMPRESSION} is not supported`);
  }
  const bad = (message) => new InvalidBatch('records', message);
  const int32s = (start, count) => Array.from({ length: count }, (_, i) => buf.readInt32BE(start + 4 * i));
  const timestampDeltas = Array.from({ length: n }, (_, i) => buf.readBigInt64BE(HEADER_BYTES + 8 * i));
  let at = HEADER_BYTES + 8 * n;
  const [offsetDeltas, keyLengths, valueLengths, headerCounts] = [0, 1, 2, 3].map((k) => int32s(at + 4 * n * k, n));
  at += 16 * n;

  offsetDeltas.forEach((delta, i) => {
    const floor = i === 0 ? 0 : offsetDeltas[i - 1] + 1;
    if (delta < floor || delta > header.lastOffsetDelta) throw bad('offset deltas must increase within [0, last offset delta]');
  });
  if ([...keyLengths, ...valueLengths].some((len) => len < -1)) throw bad('a key or value length is below -1');
  if (headerCounts.some((c) => c < 0 || c > limits.recordHeadersMax)) throw bad(`a header count is outside [0, ${limits.recordHeadersMax}]`);
  const H = headerCounts.reduce((a, b) => a + b, 0);
  if (at + HEADER_OVERHEAD_BYTES * H > length) throw bad(`${H} headers do not fit in a ${length}-byte batch`);
  const headerKeyLengths = int32s(at, H);
  const headerValueLengths = int32s(at + 4 * H, H);
  at += HEADER_OVERHEAD_BYTES * H;
  if (headerKeyLengths.some((len) => len < 0 || len > limits.headerKeyBytesMax)) {
    throw bad(`a header key length is outside [0, ${limits.headerKeyBytesMax}]`);
  }
  if (headerValueLengths.some((len) => len < -1)) throw bad('a header value length is below -1');
  const payload = [...keyLengths, ...valueLengths, ...headerKeyLengths, ...headerValueLengths]
    .reduce((sum, len) => sum + Math.max(len, 0), 0);
  if (at + payload !== length) throw bad(`the record columns add up to ${at + payload} bytes, the batch has ${length}`);

  const slices = (lengths) => lengths.map((len) => {
    if (len === -1) return null;
    const bytes = Buffer.from(buf.subarray(at, at + len)); // a copy: records outlive the fetch buffer
    at += len;
    return bytes;
  });
  const keys = slices(keyLengths);
  const values = slices(valueLengths);
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const headerKeys = slices(headerKeyLengths).map((bytes) => {
    try {
      return decoder.decode(bytes);
    } catch {
      throw bad('a header key is not UTF-8');
    }
  });
  const headerValues = slices(headerValueLengths);

  const logAppendTime = (header.attributes & ATTRIBUTE_LOG_APPEND_TIME) !== 0;
  let h = 0;
  const records = keys.map((key, i) => {
    const headers = [];
    for (let c = 0; c < headerCounts[i]; c++, h++) headers.push([headerKeys[h], headerValues[h]]);
    const timestamp = logAppendTime ? header.maxTimestampMs
      : toSafeNumber(BigInt(header.firstTimestampMs) + timestampDeltas[i], 'timestamp');
    return {
      offset: header.baseOffset + offsetDeltas[i],
      timestampMs: timestamp,
      key,
      value: values[i],
      headers,
    };
  });
  return { header, records };
}

module.exports = {
  CorruptBatch, InvalidBatch, limits, HEADER_BYTES, CRC_START,
  encodeBatch, decodeBatch, iterBatches, parseHeader, recordSizeBytes, stamp, toBytes,
};
