'use strict';
/**
 * Producer, Consumer and errors against fake nodes: in-process gRPC servers
 * built from the same .proto files, scripted to answer NOT_LEADER (with the
 * millpond-leader trailer), UNAVAILABLE or OUT_OF_RANGE as a real node would.
 * (tests/js/test_js_client.py runs the same client against a real cluster.)
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const { Producer, Consumer, MillpondError } = require('..');
const { loadServices } = require('../src/cluster');
const { decodeBatch, stamp } = require('../src/recordBatch');

/** A gRPC error as millpond/errors.py puts it on the wire. */
function millpondError(code, reason, details, trailers = {}) {
  const metadata = new grpc.Metadata();
  metadata.set('millpond-error-reason', reason);
  for (const [key, value] of Object.entries(trailers)) metadata.set(key, value);
  return Object.assign(new Error(details), { code, details, metadata });
}

/** Start a fake node whose Broker methods are `handlers` (Admin.DescribeCluster answers `metadata()`). */
async function startNode(handlers, metadata) {
  const { Admin, Broker } = loadServices();
  const server = new grpc.Server();
  const unary = (fn) => (call, callback) => {
    try {
      callback(null, fn(call.request));
    } catch (error) {
      callback(error);
    }
  };
  server.addService(Admin.service, { DescribeCluster: unary(() => metadata()) });
  server.addService(Broker.service, Object.fromEntries(Object.entries(handlers).map(([name, fn]) => [name, unary(fn)])));
  const port = await new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
  });
  return { server, address: `127.0.0.1:${port}` };
}

/**
 * Two fake nodes. The metadata (from either) claims node 1 leads every
 * partition, but node 2 does: node 1 answers NOT_LEADER naming node 2. Node 2
 * keeps the log of partition 0 of topic "t" as stamped batches.
 */
async function fakeCluster({ unavailableFirst = 0 } = {}) {
  const log = []; // stamped batches
  let nextOffset = 0;
  const nodes = [];
  const metadata = () => ({
    clusterId: 'fake',
    nodes: nodes.map(({ address }, i) => ({ id: i + 1, address, epoch: 1, alive: true })),
    controller: 1,
    topics: [{ name: 't', topicId: '1', replicationFactor: 2, partitions: [{ partition: 0, leader: 1, replicas: [1, 2], isr: [1, 2] }] }],
  });
  const notLeader = () => {
    throw millpondError(grpc.status.FAILED_PRECONDITION, 'NOT_LEADER', 'node 1 does not lead t/0',
      { 'millpond-leader': `2@${nodes[1].address}` });
  };
  nodes.push(await startNode({ Produce: notLeader, Fetch: notLeader }, metadata));
  nodes.push(await startNode({
    Produce({ batch, acks }) {
      if (unavailableFirst-- > 0) throw millpondError(grpc.status.UNAVAILABLE, 'UNAVAILABLE', 'no leader yet');
      assert.equal(acks, 'ACKS_ALL');
      const { records } = decodeBatch(batch); // the client's bytes must decode here too
      log.push(stamp(Buffer.from(batch), nextOffset, 1));
      nextOffset += records.length;
      return { baseOffset: String(nextOffset - records.length), logStartOffset: '0', leaderEpoch: '1' };
    },
    Fetch({ offset }) {
      if (Number(offset) > nextOffset) {
        throw millpondError(grpc.status.OUT_OF_RANGE, 'OFFSET_OUT_OF_RANGE', `offset ${offset} is past the end`,
          { 'millpond-log-start-offset': '0', 'millpond-high-watermark': String(nextOffset) });
      }
      const batches = log.filter((b) => Number(b.readBigInt64BE(8)) + b.readInt32BE(60) > Number(offset));
      return { batches: Buffer.concat(batches), highWatermark: String(nextOffset), logStartOffset: '0' };
    },
  }, metadata));
  return {
    bootstrap: nodes[0].address,
    nodes,
    log,
    stop: () => nodes.forEach(({ server }) => server.forceShutdown()),
  };
}

const options = { retryBackoffMs: 5, retryBackoffMsMax: 20, requestTimeoutMs: 2000, topicWaitMs: 100 };

test('the producer follows NOT_LEADER to the leader its trailer names, and stays there', async (t) => {
  const cluster = await fakeCluster();
  const producer = new Producer(cluster.bootstrap, options);
  t.after(() => { producer.close(); cluster.stop(); });

  const acks = await producer.send('t', [
    { key: 'a', value: 'v0', timestampMs: 10 },
    { key: 'b', value: 'v1', headers: [['h', null]], timestampMs: 11 },
  ]);
  assert.deepEqual(acks, [
    { topic: 't', partition: 0, offset: 0, timestampMs: 10 },
    { topic: 't', partition: 0, offset: 1, timestampMs: 11 },
  ]);
  assert.equal(producer.stats.redirects, 1);
  assert.equal(producer.cluster.topics.get('t')[0].address, cluster.nodes[1].address);

  const [ack] = await producer.send('t', [{ key: null, value: 'v2', timestampMs: 12 }]);
  assert.deepEqual(ack, { topic: 't', partition: 0, offset: 2, timestampMs: 12 });
  assert.equal(producer.stats.redirects, 1, 'the second send went straight to the leader');
});

test('a producer splits records into batches of at most batchBytes, in order', async (t) => {
  const cluster = await fakeCluster();
  const producer = new Producer(cluster.bootstrap, { ...options, batchBytes: 64 + 3 * (24 + 1 + 10) });
  t.after(() => { producer.close(); cluster.stop(); });
  const records = Array.from({ length: 7 }, (_, i) => ({ key: `${i}`, value: Buffer.alloc(10, i), timestampMs: i }));
  const acks = await producer.send('t', records);
  assert.deepEqual(acks.map((a) => a.offset), [0, 1, 2, 3, 4, 5, 6]);
  assert.equal(producer.stats.batches, 3);
});

test('a record that cannot be encoded fails the whole send before anything is sent', async (t) => {
  const cluster = await fakeCluster();
  const producer = new Producer(cluster.bootstrap, options);
  t.after(() => { producer.close(); cluster.stop(); });
  await assert.rejects(producer.send('t', [{ key: 'a', value: 'fine' }, { key: 'b', value: 42 }]), TypeError);
  await assert.rejects(producer.send('t', [{ key: 'a', value: 'v', partition: 1 }]), RangeError);
  assert.equal(cluster.log.length, 0);
});

test('retriable errors are retried with backoff', async (t) => {
  const cluster = await fakeCluster({ unavailableFirst: 2 });
  const producer = new Producer(cluster.bootstrap, options);
  t.after(() => { producer.close(); cluster.stop(); });
  const [ack] = await producer.send('t', [{ key: 'k', value: 'v', timestampMs: 1 }]);
  assert.equal(ack.offset, 0);
});

test('the consumer fetches from an offset, skips records before it, follows NOT_LEADER', async (t) => {
  const cluster = await fakeCluster();
  const producer = new Producer(cluster.bootstrap, options);
  const consumer = new Consumer(cluster.bootstrap, { ...options, maxWaitMs: 0 });
  t.after(() => { producer.close(); consumer.close(); cluster.stop(); });
  await producer.send('t', [0, 1, 2].map((i) => ({ key: `k${i}`, value: `v${i}`, headers: [['i', `${i}`]], timestampMs: 100 + i })));

  const { records, nextOffset, highWatermark } = await consumer.fetch('t', 0, 1);
  assert.deepEqual(records.map(({ offset, key, value, headers, timestampMs }) =>
    [offset, key.toString(), value.toString(), headers.map(([k, v]) => [k, v.toString()]), timestampMs]),
  [[1, 'k1', 'v1', [['i', '1']], 101], [2, 'k2', 'v2', [['i', '2']], 102]]);
  assert.equal(records[0].topic, 't');
  assert.equal(nextOffset, 3);
  assert.equal(highWatermark, 3);
  assert.equal(consumer.stats.redirects, 1);
  assert.deepEqual((await consumer.fetch('t', 0, 3)).records, []);
});

test('errors carry the reason and trailers; non-retriable ones are not retried', async (t) => {
  const cluster = await fakeCluster();
  const consumer = new Consumer(cluster.bootstrap, options);
  t.after(() => { consumer.close(); cluster.stop(); });
  await assert.rejects(consumer.fetch('t', 0, 5), (error) => {
    assert.ok(error instanceof MillpondError);
    assert.equal(error.reason, 'OFFSET_OUT_OF_RANGE');
    assert.equal(error.code, grpc.status.OUT_OF_RANGE);
    assert.equal(error.logStartOffset, 0);
    assert.equal(error.highWatermark, 0);
    assert.equal(error.retriable, false);
    assert.match(error.message, /offset 5 is past the end/);
    return true;
  });
  await assert.rejects(consumer.fetch('t', 1, 0), { reason: 'UNKNOWN_PARTITION' });
  const producer = new Producer(cluster.bootstrap, options);
  t.after(() => producer.close());
  await assert.rejects(producer.send('missing', [{ key: 'k', value: 'v' }]), { reason: 'UNKNOWN_TOPIC' });
});
