'use strict';
/**
 * millpond errors as JavaScript sees them.
 *
 * The broker sends an error as a gRPC status plus trailing metadata
 * (proto/millpond/v1/common.proto, millpond/errors.py):
 *   millpond-error-reason      stable reason, e.g. NOT_LEADER, UNKNOWN_TOPIC
 *   millpond-leader            "<id>@<host:port>" of the leader (NOT_LEADER, NOT_CONTROLLER)
 *   millpond-log-start-offset, millpond-high-watermark   (OFFSET_OUT_OF_RANGE)
 *   millpond-retry-after-ms    (RESOURCE_EXHAUSTED)
 * fromGrpcError turns a failed call into one MillpondError carrying all of it.
 */

const { status: Status } = require('@grpc/grpc-js');

/** Reasons worth retrying: the same request may succeed later or elsewhere. */
const RETRIABLE = new Set(['NOT_LEADER', 'NOT_CONTROLLER', 'UNAVAILABLE', 'TIMEOUT', 'RESOURCE_EXHAUSTED', 'CORRUPT_BATCH']);

/** The reason of a status that came without a millpond-error-reason trailer (as millpond/errors.py). */
const REASON_BY_STATUS = new Map([
  [Status.INVALID_ARGUMENT, 'INVALID_ARGUMENT'],
  [Status.NOT_FOUND, 'UNKNOWN_TOPIC'],
  [Status.ALREADY_EXISTS, 'TOPIC_EXISTS'],
  [Status.OUT_OF_RANGE, 'OFFSET_OUT_OF_RANGE'],
  [Status.UNAVAILABLE, 'UNAVAILABLE'],
  [Status.CANCELLED, 'UNAVAILABLE'],
  [Status.DEADLINE_EXCEEDED, 'TIMEOUT'],
  [Status.RESOURCE_EXHAUSTED, 'RESOURCE_EXHAUSTED'],
]);

class MillpondError extends Error {
  /**
   * @param {string} message
   * @param {object} fields  reason (string), code (gRPC status number), and where they apply
   *   leaderId, leaderAddress, logStartOffset, highWatermark, retryAfterMs
   */
  constructor(message, { reason = 'INTERNAL', code = Status.INTERNAL, ...extra } = {}) {
    super(`${reason}: ${message}`);
    this.name = 'MillpondError';
    this.reason = reason;
    this.code = code;
    Object.assign(this, extra);
  }

  /** True if retrying (after a backoff, or at the leader named here) may succeed. */
  get retriable() {
    return RETRIABLE.has(this.reason);
  }
}

/** The MillpondError for an error from a grpc-js call (`err.code`, `err.details`, `err.metadata`). */
function fromGrpcError(err) {
  const trailer = (key) => {
    const values = err.metadata?.get(key) ?? [];
    return values.length ? String(values[0]) : undefined;
  };
  const reason = trailer('millpond-error-reason') ?? REASON_BY_STATUS.get(err.code) ?? 'INTERNAL';
  const extra = {};
  const leader = trailer('millpond-leader');
  if (leader) {
    const at = leader.indexOf('@');
    extra.leaderId = Number(leader.slice(0, at));
    extra.leaderAddress = leader.slice(at + 1);
  }
  for (const [key, field] of [['millpond-log-start-offset', 'logStartOffset'],
    ['millpond-high-watermark', 'highWatermark'], ['millpond-retry-after-ms', 'retryAfterMs']]) {
    const value = trailer(key);
    if (value !== undefined) extra[field] = Number(value);
  }
  const error = new MillpondError(err.details || err.message, { reason, code: err.code, ...extra });
  error.cause = err;
  return error;
}

module.exports = { MillpondError, fromGrpcError, RETRIABLE };
