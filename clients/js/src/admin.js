'use strict';
/**
 * Cluster metadata and topic administration (a subset of the Admin service).
 * Any node answers; writes are forwarded to the active controller. Every method
 * rejects with a MillpondError whose `reason` says why (TOPIC_EXISTS,
 * INVALID_TOPIC_NAME, REPLICATION_FACTOR_TOO_LARGE, UNKNOWN_TOPIC, ...).
 */

const { Cluster, toNumber } = require('./cluster');

/** A TopicInfo message as plain numbers (the topic id stays a decimal string: it is a uint64). */
function topicInfo(topic) {
  return {
    name: topic.name,
    topicId: topic.topicId,
    replicationFactor: topic.replicationFactor,
    config: { ...topic.config },
    partitions: topic.partitions.map((p) => ({
      partition: p.partition,
      leader: p.leader,
      leaderEpoch: toNumber(p.leaderEpoch),
      replicas: p.replicas,
      isr: p.isr,
      logStartOffset: toNumber(p.logStartOffset),
      highWatermark: toNumber(p.highWatermark),
    })),
  };
}

class Admin {
  /** @param {string|string[]} bootstrap  "host:port[,host:port...]"; options: see cluster.js. */
  constructor(bootstrap, options = {}) {
    this.cluster = new Cluster(bootstrap, options);
  }

  /** Nodes, the active controller and every topic. */
  async describeCluster() {
    const response = await this.cluster.refresh();
    return {
      clusterId: response.clusterId,
      controller: response.controller,
      nodes: response.nodes.map(({ id, address, epoch, alive }) => ({ id, address, epoch: toNumber(epoch), alive })),
      topics: response.topics.map(topicInfo),
    };
  }

  /** Create a topic; resolves to its description. */
  async createTopic(name, { partitions, replicationFactor, config = {} }) {
    const response = await this.#call('CreateTopic', { name, partitions, replicationFactor, config });
    return topicInfo(response.topic);
  }

  async describeTopic(name) {
    return topicInfo(await this.#call('DescribeTopic', { name }));
  }

  async listTopics() {
    return (await this.#call('ListTopics', {})).names;
  }

  async deleteTopic(name) {
    await this.#call('DeleteTopic', { name });
  }

  /** One call at the first node that answers (connection failures move on to the next). */
  async #call(method, request) {
    let lastError;
    for (const address of this.cluster.addresses()) {
      try {
        return await this.cluster.call('Admin', address, method, request);
      } catch (error) {
        if (error.reason !== 'UNAVAILABLE') throw error;
        lastError = error;
      }
    }
    throw lastError;
  }

  close() {
    this.cluster.close();
  }
}

module.exports = { Admin };
