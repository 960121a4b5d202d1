#!/usr/bin/env node
'use strict';
/**
 * The JavaScript side of tests/js/test_js_client.py: produce and consume
 * against a real cluster, with JSON lines in and out. Bytes travel as base64
 * (null stays null), so any key, value or header survives exactly.
 *
 *   node e2e.js describe --bootstrap B
 *       prints {"nodes": [{id, address}], "topics": {name: partition count}}
 *   node e2e.js produce --bootstrap B --topic T [--acks all] [--misroute]
 *       stdin:  {"key", "value", "headers": [[k, v]], "timestampMs"?, "partition"?} per line
 *       stdout: {"partition", "offset", "timestampMs"} per record, in input order
 *   node e2e.js consume --bootstrap B --topic T --count N [--timeout-ms 30000] [--misroute]
 *       stdout: {"partition", "offset", "timestampMs", "key", "value", "headers"} per record,
 *               every partition from its earliest offset, until N records in all (exit 1 if the time runs out)
 *
 * --misroute points the client's cached leader of every partition at a
 * follower first, so that each partition's first request is answered
 * NOT_LEADER and the client must follow the millpond-leader trailer. Both
 * commands end by printing `stats {...}` (the client's counters) on stderr.
 * Errors: a one-line message on stderr, exit code 1.
 */

const { parseArgs } = require('node:util');
const readline = require('node:readline');
const { Admin, Consumer, Producer } = require('..');

const b64 = (bytes) => (bytes === null ? null : bytes.toString('base64'));
const unb64 = (text) => (text === null ? null : Buffer.from(text, 'base64'));

/** Make every partition of `topic` look led by a node that does not lead it. */
async function misroute(cluster, topic) {
  const partitions = await cluster.partitions(topic);
  partitions.forEach(({ leader }, partition) => {
    const [id, address] = [...cluster.nodes].find(([node]) => node !== leader);
    cluster.setLeader(topic, partition, id, address);
  });
}

async function produce(args) {
  const producer = new Producer(args.bootstrap, { acks: args.acks === 'all' ? 'all' : Number(args.acks) });
  try {
    const records = [];
    for await (const line of readline.createInterface({ input: process.stdin })) {
      if (!line.trim()) continue;
      const { key, value, headers = [], timestampMs, partition } = JSON.parse(line);
      records.push({ key: unb64(key), value: unb64(value), headers: headers.map(([k, v]) => [k, unb64(v)]), timestampMs, partition });
    }
    if (args.misroute) await misroute(producer.cluster, args.topic);
    for (const { partition, offset, timestampMs } of await producer.send(args.topic, records)) {
      console.log(JSON.stringify({ partition, offset, timestampMs }));
    }
    console.error(`stats ${JSON.stringify(producer.stats)}`);
  } finally {
    producer.close();
  }
}

async function consume(args) {
  const consumer = new Consumer(args.bootstrap, { maxWaitMs: 200 });
  try {
    const count = Number(args.count);
    const deadline = Date.now() + Number(args['timeout-ms']);
    const partitions = (await consumer.cluster.partitions(args.topic)).length;
    if (args.misroute) await misroute(consumer.cluster, args.topic);
    const positions = await Promise.all(Array.from({ length: partitions }, (_, p) => consumer.offset(args.topic, p, 'earliest')));
    let seen = 0;
    while (seen < count) {
      if (Date.now() >= deadline) throw new Error(`timed out with ${seen} of ${count} records`);
      const fetched = await Promise.all(positions.map((offset, p) => consumer.fetch(args.topic, p, offset)));
      for (const [p, { records, nextOffset }] of fetched.entries()) {
        positions[p] = nextOffset;
        for (const { partition, offset, timestampMs, key, value, headers } of records) {
          console.log(JSON.stringify({ partition, offset, timestampMs, key: b64(key), value: b64(value),
            headers: headers.map(([k, v]) => [k, b64(v)]) }));
          seen++;
        }
      }
    }
    console.error(`stats ${JSON.stringify(consumer.stats)}`);
  } finally {
    consumer.close();
  }
}

async function describe(args) {
  const admin = new Admin(args.bootstrap);
  try {
    const cluster = await admin.describeCluster();
    console.log(JSON.stringify({
      nodes: cluster.nodes.map(({ id, address }) => ({ id, address })),
      topics: Object.fromEntries(cluster.topics.map((t) => [t.name, t.partitions.length])),
    }));
  } finally {
    admin.close();
  }
}

const { positionals: [command], values: args } = parseArgs({
  allowPositionals: true,
  options: {
    bootstrap: { type: 'string', default: '127.0.0.1:9091' },
    topic: { type: 'string' },
    acks: { type: 'string', default: 'all' },
    count: { type: 'string', default: '0' },
    'timeout-ms': { type: 'string', default: '30000' },
    misroute: { type: 'boolean', default: false },
  },
});
const commands = { produce, consume, describe };
if (!commands[command]) {
  console.error(`usage: e2e.js ${Object.keys(commands).join('|')} [options] (see the comment at the top)`);
  process.exit(2);
}
commands[command](args).catch((error) => {
  console.error(`error: ${error.message}`);
  process.exitCode = 1;
});
