'use strict';
/**
 * Connections and cluster metadata shared by Producer, Consumer and Admin.
 *
 * The gRPC stubs come from the repository's .proto files, loaded at run time
 * with @grpc/proto-loader (no generated code). Metadata comes from
 * Admin.DescribeCluster(include_topics) on any node; a NOT_LEADER answer that
 * names the leader (trailer millpond-leader) updates the cache in place.
 */

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { MillpondError, fromGrpcError } = require('./errors');

/** Where millpond/v1/*.proto live: $MILLPOND_PROTO_DIR, else the repository's proto/. */
const PROTO_DIR = process.env.MILLPOND_PROTO_DIR || path.resolve(__dirname, '..', '..', '..', 'proto');

/** Options of every client (the Python client's defaults). */
const defaults = Object.freeze({
  /** Deadline of one RPC (a Fetch adds its wait). */
  requestTimeoutMs: 10_000,
  /** First and longest delay between retries; doubles per attempt, with jitter. */
  retryBackoffMs: 50,
  retryBackoffMsMax: 2_000,
  /** How long to wait for a topic missing from the metadata before UNKNOWN_TOPIC. */
  topicWaitMs: 2_000,
});

let services;
/** The millpond.v1 package (Admin and Broker constructors), loaded once. */
function loadServices() {
  services ??= grpc.loadPackageDefinition(protoLoader.loadSync(
    ['millpond/v1/admin.proto', 'millpond/v1/broker.proto'],
    // Fields in camelCase; 64-bit integers as decimal strings (see toNumber); enums by name.
    { includeDirs: [PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true },
  )).millpond.v1;
  return services;
}

/** A decimal string or number from a 64-bit field as a number; RangeError if not exactly representable. */
function toNumber(value) {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new RangeError(`${value} is beyond Number.MAX_SAFE_INTEGER`);
  return n;
}

/** "host:port,host:port" or an array of such strings, as a list of addresses. */
function parseBootstrap(bootstrap) {
  const addresses = [bootstrap].flat().flatMap((s) => String(s).split(',')).map((s) => s.trim()).filter(Boolean);
  if (!addresses.length) throw new TypeError('bootstrap names no host:port');
  return addresses;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Delay before retry `attempt` (0-based): exponential with jitter, capped. */
function backoffMs(attempt, { retryBackoffMs, retryBackoffMsMax }) {
  const ceiling = Math.min(retryBackoffMsMax, retryBackoffMs * 2 ** Math.min(attempt, 20));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

class Cluster {
  /**
   * @param {string|string[]} bootstrap  "host:port[,host:port...]"
   * @param {object} [options]  requestTimeoutMs, retryBackoffMs, retryBackoffMsMax, topicWaitMs (see defaults)
   */
  constructor(bootstrap, options = {}) {
    this.bootstrap = parseBootstrap(bootstrap);
    this.options = { ...defaults, ...options };
    /** node id -> address */
    this.nodes = new Map();
    /** topic -> array of { leader: node id (0 if none), address: leader's address or null } */
    this.topics = new Map();
    this.clients = new Map();
  }

  /** The stub of `service` ('Admin' or 'Broker') at `address`, created once. */
  client(service, address) {
    const key = `${service}@${address}`;
    let client = this.clients.get(key);
    if (!client) {
      const Service = loadServices()[service];
      client = new Service(address, grpc.credentials.createInsecure(), {
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
        'grpc.max_send_message_length': 64 * 1024 * 1024,
      });
      this.clients.set(key, client);
    }
    return client;
  }

  /**
   * One unary call of `service`.`method` at `address`, with a deadline of
   * `timeoutMs` (default requestTimeoutMs). Rejects with a MillpondError.
   */
  call(service, address, method, request, timeoutMs = this.options.requestTimeoutMs) {
    return new Promise((resolve, reject) => {
      this.client(service, address)[method](request, { deadline: Date.now() + timeoutMs }, (err, response) => {
        if (err) reject(fromGrpcError(err));
        else resolve(response);
      });
    });
  }

  /** Known node addresses first, then the bootstrap list. */
  addresses() {
    return [...new Set([...this.nodes.values(), ...this.bootstrap])];
  }

  /**
   * DescribeCluster(include_topics) from the first node that answers; replaces
   * the cache and returns the response. Rejects with the last node's error.
   */
  async refresh() {
    let lastError;
    for (const address of this.addresses()) {
      try {
        const response = await this.call('Admin', address, 'DescribeCluster', { includeTopics: true });
        this.nodes = new Map(response.nodes.map((node) => [node.id, node.address]));
        this.topics = new Map(response.topics.map((topic) => [topic.name, topic.partitions
          .slice().sort((a, b) => a.partition - b.partition)
          .map((p) => ({ leader: p.leader, address: p.leader ? this.nodes.get(p.leader) ?? null : null }))]));
        return response;
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  /**
   * The partitions of `topic`, refreshing the metadata until the topic shows up
   * or topicWaitMs passed (a node may learn of a topic just created a moment
   * later). Rejects with UNKNOWN_TOPIC.
   */
  async partitions(topic) {
    const deadline = Date.now() + this.options.topicWaitMs;
    for (let attempt = 0; !this.topics.has(topic); attempt++) {
      await this.refresh();
      if (this.topics.has(topic)) break;
      if (Date.now() >= deadline) {
        throw new MillpondError(`topic ${JSON.stringify(topic)} does not exist`, { reason: 'UNKNOWN_TOPIC', code: grpc.status.NOT_FOUND });
      }
      await sleep(backoffMs(attempt, this.options));
    }
    return this.topics.get(topic);
  }

  /** Point the cache at `address` as the leader of `topic`/`partition` (a NOT_LEADER hint). */
  setLeader(topic, partition, leaderId, address) {
    const partitions = this.topics.get(topic);
    if (partitions?.[partition]) partitions[partition] = { leader: leaderId, address };
  }

  /**
   * Call `method` of the Broker service at the leader of `topic`/`partition`,
   * retrying retriable errors with backoff until `deadlineMs` (a Date.now()
   * value): NOT_LEADER with a named leader goes straight there; other retriable
   * errors, and UNKNOWN_TOPIC / UNKNOWN_PARTITION from a node that may lag
   * behind the metadata, refresh the metadata first. `onRedirect` is called for
   * each NOT_LEADER followed. Rejects with the last error.
   */
  async callLeader(topic, partition, method, request, { deadlineMs, timeoutMs, onRedirect } = {}) {
    let redirects = 0;
    for (let attempt = 0; ; attempt++) {
      let address = null;
      try {
        const partitions = await this.partitions(topic);
        if (partition >= partitions.length) {
          throw new MillpondError(`topic ${topic} has ${partitions.length} partitions, no partition ${partition}`,
            { reason: 'UNKNOWN_PARTITION', code: grpc.status.NOT_FOUND });
        }
        address = partitions[partition].address;
        if (!address) {
          throw new MillpondError(`${topic}/${partition} has no leader yet`, { reason: 'UNAVAILABLE', code: grpc.status.UNAVAILABLE });
        }
        return await this.call('Broker', address, method, request, timeoutMs);
      } catch (error) {
        const lagging = address && (error.reason === 'UNKNOWN_TOPIC' || error.reason === 'UNKNOWN_PARTITION');
        if (!(error.retriable || lagging) || Date.now() >= deadlineMs) throw error;
        const redirect = error.reason === 'NOT_LEADER' && error.leaderAddress && error.leaderAddress !== address;
        if (redirect) {
          this.setLeader(topic, partition, error.leaderId, error.leaderAddress);
          onRedirect?.(error);
          if (++redirects <= 3) continue; // the node told us where to go: no backoff, unless we go round in circles
        }
        await sleep(Math.min(backoffMs(attempt, this.options), Math.max(0, deadlineMs - Date.now())));
        if (!redirect && error.reason !== 'RESOURCE_EXHAUSTED') await this.refresh().catch(() => {});
      }
    }
  }

  /** Close every channel. */
  close() {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}

module.exports = { Cluster, loadServices, parseBootstrap, toNumber, sleep, PROTO_DIR };
